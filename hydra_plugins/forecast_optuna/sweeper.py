"""The Optuna sweeper Hydra finds under hydra_plugins (configs: conf/hydra/sweeper/).

Hydra instantiates plugins only from the hydra_plugins namespace, and imports every module here
whenever any of our commands starts, so this module stays small and imports Optuna only when a
sweep begins; the study logic is forecast/tuning.py.
"""

from __future__ import annotations

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Each trial's settings asked from an Optuna study, run through Hydra's launcher, its result told back.

    Args:
        n_trials: trials the study should hold when the sweep ends (finished ones already stored count).
        n_jobs: trials launched at once (a parallel launcher, e.g. hydra/launcher=joblib, runs them together).
        storage: the study's database URL, e.g. sqlite:///optuna.db.
        study_name: the study in that storage; created when missing, resumed when present.
        sampler: an Optuna sampler config (hydra/sweeper/sampler=tpe | random).
        pruner: an Optuna pruner config (hydra/sweeper/pruner=median | hyperband | none).
        direction: minimize (the objective is the training's best validation loss).
        start_from_defaults: a new study's first trial is the configured value of every searched setting
            (those inside the space), so the best trial is never worse on validation than the defaults.
    """

    def __init__(
        self,
        n_trials: int,
        n_jobs: int,
        storage: str,
        study_name: str,
        sampler,
        pruner,
        direction: str = "minimize",
        start_from_defaults: bool = True,
    ):
        self.settings = {
            "n_trials": n_trials,
            "n_jobs": n_jobs,
            "storage": storage,
            "study_name": study_name,
            "sampler": sampler,
            "pruner": pruner,
            "direction": direction,
        }
        self.start_from_defaults = start_from_defaults
        self.launcher = None
        self.config = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context, task_function=task_function)
        self.config = config  # composed without the sweep overrides: the settings a trial gets when nothing is searched

    def sweep(self, arguments: list[str]) -> None:
        from forecast.tuning import sweep  # Optuna is imported here, not when Hydra scans its plugins

        sweep(self.launcher, arguments, **self.settings, defaults=self.config if self.start_from_defaults else None)


def register() -> None:
    """Make the sweeper known to Hydra even where its plugin scan cannot list this folder.

    Hydra finds plugins by listing the hydra_plugins namespace; an editable install (`pip install -e .`)
    serves it through an import hook that such a listing cannot see, so forecast.train registers it.
    """
    Plugins.instance().register(OptunaSweeper)
