"""python -m forecast.tune: search one architecture's settings on validation loss with Optuna.

    python -m forecast.tune model=gru trials=40                       # the space of conf/tune/gru.yaml
    python -m forecast.tune data=csv data.path=readings.csv trials=30 hydra/sweeper/sampler=random
    python -m forecast.train +tuned=<tune run id>                     # then train with the best settings

One MLflow parent run (tag kind=tune) holds every trial as a child run: each trial is an ordinary
`python -m forecast.train` run, launched by Hydra's Optuna sweeper (hydra_plugins/forecast_optuna,
forecast/tuning.py) in one multirun, so the launcher (basic, joblib, submitit) decides where trials
run. The objective is the training's best validation loss, never a test figure. The study lives in
an SQLite file beside the tracking store under a name derived from the settings, so the same
command run again resumes it up to `trials`. At the end the parent run records the best settings
(tuned.yaml), the trial table, the history plot and the parameter importances (forecast/tune_report.py).
"""

from __future__ import annotations

import sys

import hydra
import mlflow
from hydra.core.hydra_config import HydraConfig
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from forecast import config, speed, tracking, tune_report, tuning
from forecast.children import launch
from forecast.comparison import machine
from forecast.errors import InputError, reported

config.register_resolvers()

OWN_KEYS = ("trials", "study", "storage", "tune")  # tune's settings, not a training's
SET_HERE = ("tracking.parent", "hydra.sweep.dir")  # tune sets these for its trials


@hydra.main(version_base="1.3", config_path="../conf", config_name="tune")
def main(cfg: DictConfig) -> None:
    with reported():  # SIGINT/SIGTERM: the parent run and the trial under way end KILLED; the study stays resumable
        status = tune(cfg)
    if status:
        sys.exit(status)


def tune(cfg: DictConfig) -> int:
    """Check the settings and the search space, run the study under one parent run, record it; returns the exit status."""
    hydra_cfg = HydraConfig.get()
    task = list(hydra_cfg.overrides.task)
    passed = [o for o in task if not any(tuning_key(config.override_key(o), k) for k in (*OWN_KEYS, *SET_HERE))]
    plugins = config.overrides_under(list(hydra_cfg.overrides.hydra), "hydra/sweeper", "hydra.sweeper", "hydra/launcher", "hydra.launcher")
    if not isinstance(cfg.trials, int) or isinstance(cfg.trials, bool) or cfg.trials < 1:
        raise InputError(f"trials={cfg.trials}: give the number of trials the study should hold, e.g. trials=20")
    model = hydra_cfg.runtime.choices["model"]
    fixed = [config.override_key(o).lstrip("+") for o in passed]
    # a setting given on the command line is fixed, not searched
    space = tuning.space_overrides(cfg.tune.params, [*fixed, *tuning.unused(cfg)])
    distributions, _ = tuning.parse_space(space)
    if not distributions:
        raise InputError(f"tune.params: the search space of model={model} is empty; give at least one {tuning.SWEEP_SYNTAX}")
    speed.use_threads(cfg.threads)
    tuning.check_space(cfg, distributions)
    data = config.build(cfg.data)  # data errors surface before any run exists
    sweeper = hydra_cfg.sweeper
    settings = {
        "experiment": cfg.tracking.experiment,
        "model": model,
        "overrides": sorted(tuned_base(model, passed)),  # not where it is recorded: a comparison's tag leaves the study the same
        "space": sorted(space),
        "sampler": OmegaConf.to_container(sweeper.sampler),
        "pruner": OmegaConf.to_container(sweeper.pruner),
    }
    name = cfg.study or tuning.study_name(cfg.tracking.experiment, model, data.name, settings)
    storage = cfg.storage or tuning.default_storage()

    experiment_id = tracking.connect(cfg.tracking.experiment)
    client = MlflowClient(tracking.tracking_uri())
    tracking.mark_dead_runs(client, experiment_id)
    earlier = client.search_runs([experiment_id], f"tags.kind = 'tune' and tags.study = '{name}'", order_by=["attributes.start_time DESC"])
    resumed = earlier[0].info.run_id if earlier else None
    tags = {
        "kind": "tune",
        "architecture": model,
        "dataset": data.name,
        "study": name,
        "storage": storage,
        "trials": str(cfg.trials),
        "machine": machine(),
        "command": " ".join(["python -m forecast.tune", *task, *plugins]),
        **cfg.tracking.tags,
    }
    with tracking.start_run(experiment_id, f"tune-{model}-{data.name}", tags, run_id=resumed) as parent:
        run_id = parent.info.run_id
        if resumed is None:  # params are fixed once logged; trials (which may grow) is a tag
            mlflow.log_params({k: v for k, v in tracking.flatten(cfg).items() if not k.startswith(("trials", "study", "storage"))})
        print(f"{'resuming' if resumed else 'tuning'} {model} on {data.name}: study {name} in {storage}, {cfg.trials} trials; run {run_id}")
        command = [
            sys.executable,
            "-m",
            "forecast.train",
            "-m",
            "hydra/sweeper=optuna",
            *plugins,
            f"hydra.sweeper.n_trials={cfg.trials}",
            f"hydra.sweeper.storage='{storage}'",
            f"hydra.sweeper.study_name='{name}'",
            f"model={model}",
            *[o for o in passed if config.override_key(o) not in ("model", "tracking.experiment")],  # both set here
            *space,
            f"tracking.experiment={cfg.tracking.experiment}",
            f"tracking.parent={run_id}",
            f"hydra.sweep.dir=multirun/tune-{run_id[:8]}",
        ]
        status = launch(command)
        study = tuning.load(storage, name)
        summary = tune_report.record(study, tuned_base(model, passed), f"{model} on {data.name}: {name}") if study else {}
        if status or not summary.get("tune/trials_complete"):
            mlflow.end_run("FAILED")
            why = f"the trials' multirun failed with exit status {status} (its output is above)" if status else "no trial completed"
            print(f"error: {why}; the tune run {run_id} is marked FAILED (the study {name} can be resumed)", file=sys.stderr)
            return 2 if status == 2 else 1
        describe(client, run_id, summary, name)
    best = study.best_trial
    print(
        f"best of {summary['tune/trials']} trials ({summary['tune/trials_complete']} completed, {summary['tune/trials_pruned']} pruned, "
        f"{summary['tune/trials_failed']} failed; {summary['tune/fit_s_total']:.0f} s of fitting): "
        f"trial {best.number}, val/best_loss {best.value:.4f}"
    )
    print("  " + " ".join(tuning.override_text(k, v) for k, v in best.params.items()))
    print(summary["importances_note"] or "importances: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["importances"].items()))
    print(f"train with them: python -m forecast.train +tuned={run_id}")
    print(tracking.ui_hint(experiment_id))
    return 0


def tuning_key(key: str, own: str) -> bool:
    key = key.lstrip("+~")
    return key == own or key.startswith(own + ".") or key.startswith(own + "/")


def tuned_base(model: str, passed: list[str]) -> list[str]:
    """The overrides every trial shared (but where it was recorded), which `+tuned` replays with the best values."""
    return [
        f"model={model}",
        *(o for o in passed if config.override_key(o) != "model" and not tuning_key(config.override_key(o), "tracking")),
    ]


def describe(client: MlflowClient, run_id: str, summary: dict, name: str) -> None:
    text = (
        f"Tuning study `{name}`: {summary['tune/trials']} trials ({summary['tune/trials_complete']} completed, "
        f"{summary['tune/trials_pruned']} pruned, {summary['tune/trials_failed']} failed), best val/best_loss "
        f"{summary['tune/best_val_loss']:.4f}. Train with the best settings: `python -m forecast.train +tuned={run_id}`."
    )
    tracking.describe(client, run_id, text)


if __name__ == "__main__":
    sys.argv = tuning.quote_space(sys.argv)  # the space's sweeps reach Hydra as text, however the shell quoted them
    main()
