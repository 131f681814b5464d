"""Inside a tuning trial: val/loss reported to the Optuna study each epoch, the pruner's verdict obeyed.

`python -m forecast.train` wraps every training in `trial`; for a training the Optuna sweep launched
(forecast/tuning.py sets `+trial=<number>`) it adds `TrialPruning`. Only rank zero talks to the
study; under DDP it broadcasts the verdict, so every rank stops at the same epoch. Optuna is imported
only inside a trial, so a plain training does not pay for it.
"""

from __future__ import annotations

import contextlib
import math
import sys

import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch import Callback
from omegaconf import DictConfig

from forecast import tracking
from forecast.errors import InputError, JobFailed, held


@contextlib.contextmanager
def trial(cfg: DictConfig):
    """Around one training: the callbacks an Optuna trial needs (none for a plain training).

    A trial reports its val/loss to the study each epoch and stops when the pruner says so; a trial
    whose training fails (a loss that became NaN) ends its run FAILED and returns no value, so the
    study records it failed and goes on. Under DDP, the ranks Lightning starts re-run this trial's
    own overrides, not the whole sweep (Lightning re-runs sys.argv, which holds the sweep).
    """
    if cfg.get("trial") is None:
        yield []
        return
    hydra_cfg = HydraConfig.get()
    sweeper = hydra_cfg.sweeper if tracking.is_rank_zero() else None  # only rank zero talks to the study
    if sweeper is not None and "study_name" not in sweeper:
        raise InputError(f"trial={cfg.trial} is set by python -m forecast.tune for its trials; remove it from the command line")
    argv = sys.argv
    sys.argv = [argv[0], *hydra_cfg.overrides.task]  # what Lightning's DDP launcher re-runs for ranks 1..n-1
    try:
        yield [TrialPruning(int(cfg.trial), sweeper)]
    except JobFailed as e:
        print(f"error: trial {cfg.trial}: {e}", file=sys.stderr, flush=True)
    finally:
        sys.argv = argv
        release_process_group()


def release_process_group() -> None:
    """End a DDP trial's process group, so the next trial in this process starts its own."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class TrialPruning(Callback):
    """Report each epoch's val/loss to trial `number` of the study; stop the training when the study's pruner says so.

    Args:
        number: the trial's number in the study (the sweep passes it as `+trial=<number>`).
        sweeper: the sweep's Hydra config (storage, study_name, pruner) on rank zero; None on other ranks.
    """

    def __init__(self, number: int, sweeper: DictConfig | None):
        self.number = number
        self.sweeper = sweeper
        self.trial = None  # optuna.Trial, on rank zero
        self.pruned_at: int | None = None  # the epoch (1-based) after which the pruner stopped the training

    def on_fit_start(self, trainer, module) -> None:
        if not trainer.is_global_zero:
            return
        import optuna

        study = optuna.load_study(study_name=self.sweeper.study_name, storage=self.sweeper.storage, pruner=instantiate(self.sweeper.pruner))
        trial_id = next(t._trial_id for t in study.get_trials(deepcopy=False) if t.number == self.number)
        self.trial = optuna.Trial(study, trial_id)
        if mlflow.active_run() is not None:  # the trial table joins the study to the MLflow runs by this
            self.trial.set_user_attr("run_id", mlflow.active_run().info.run_id)

    def on_validation_end(self, trainer, module) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero:
            loss = trainer.callback_metrics.get("val/loss")
            if loss is not None and math.isfinite(float(loss)):
                with held():  # the study is an SQLite file too
                    self.trial.report(float(loss), step=trainer.current_epoch)
                    prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
            self.pruned_at = trainer.current_epoch + 1
            if trainer.is_global_zero:
                self.trial.set_user_attr("pruned_at_epoch", self.pruned_at)

    def record(self, epochs: tracking.EpochLog, fit_s: float, train_windows: int) -> float:
        """End a pruned trial's run: its validation figures and a tag, no test and no model; its best val/loss."""
        best = min(epochs.val_loss)
        mlflow.log_metrics(
            {"val/best_loss": best, "train/best_epoch": epochs.val_loss.index(best), "time/fit_s": fit_s, **epochs.timing(train_windows)}
        )
        mlflow.set_tags({"trial_state": "PRUNED", tracking.DESCRIPTION: pruned_note(self.number, self.pruned_at, best)})
        print(f"trial {self.number} pruned after epoch {self.pruned_at}: val/best_loss {best:.4f} (no test, no model logged)")
        return best


def pruned_note(number: int, epoch: int, best: float) -> str:
    return (
        f"Tuning trial {number}, **pruned** after epoch {epoch}: its validation loss was not promising against the "
        f"study's earlier trials at that epoch (best val/loss {best:.4f}). Scored on validation only: no test, no model."
    )
