"""python -m forecast.compare: GRU or LSTM for this data? Measure it, with its uncertainty.

    python -m forecast.compare                                   # gru and lstm, seeds 0-2, sample data
    python -m forecast.compare data=etth1 budget=params          # parameter counts matched within 2%
    python -m forecast.compare small_data=true 'lookbacks=[720]' # also on 10% / 25% of the training span, and at L = 720
    python -m forecast.compare budget=tuned trials=20            # each tuned first (forecast.tune), seeds at its best settings
    python -m forecast.compare hydra/launcher=joblib             # pairs in parallel processes (pip install -e ".[compare]")

One MLflow parent run (tag kind=comparison) holds one child run per (condition, architecture,
seed): every child is an ordinary `python -m forecast.train` run, launched as a Hydra multirun
with the user's overrides, so the launcher (basic, joblib, submitit_slurm) decides where the
pairs run. The comparison then builds its report from MLflow (`forecast.report`), logs it to the
parent run and writes it to <report_dir>/<parent run id>/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import mlflow
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from forecast import comparison_report, comparison_tuning, config, speed, tracking, tuning
from forecast.children import launch_together, side_by_side
from forecast.comparison import by_hidden_size, hidden_override, hidden_sizes, machine, model_config, pass_on, plan, seed_list
from forecast.errors import InputError, reported
from forecast.training import check_settings

config.register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="compare")
def main(cfg: DictConfig) -> None:
    with reported():  # SIGINT/SIGTERM: the parent run and the training under way end KILLED
        status = compare(cfg)
    if status:
        sys.exit(status)


def compare(cfg: DictConfig) -> int:
    """Check every setting, train all pairs as children of one parent run, then report; returns the exit status."""
    overrides = HydraConfig.get().overrides
    passed = pass_on(list(overrides.task))
    space = [o for o in overrides.task if config.override_key(o).startswith("tune.")]  # budget=tuned: for every tuning
    launcher = config.overrides_under(list(overrides.hydra), "hydra/launcher", "hydra.launcher")
    models, seeds = [str(m) for m in cfg.models], seed_list(cfg.seeds)
    if len(models) < 2 or len(set(models)) < len(models):
        raise InputError(f"models={models}: name two or more different model configs, e.g. models=[gru,lstm]")
    if cfg.budget not in ("hidden", "params", "tuned"):
        raise InputError(f"budget={cfg.budget!r} is not one of hidden, params, tuned")
    if cfg.budget == "tuned" and (not isinstance(cfg.trials, int) or isinstance(cfg.trials, bool) or cfg.trials < 1):
        raise InputError(f"trials={cfg.trials}: give the number of tuning trials per architecture, e.g. trials=20")
    speed.use_threads(cfg.threads)  # as the trainings will run (and a bad value fails here)
    for m in models:  # every training's settings, at every lookback, before any data is read
        model_config(m, passed)  # an unknown model config is named here
        for lookback in [None, *cfg.lookbacks]:
            at = [] if lookback is None else [f"data.lookback={int(lookback)}"]
            check_settings(hydra.compose("compare", overrides=[*passed, f"model={m}", *at]))

    data = config.build(cfg.data)  # data errors surface before any run exists
    conditions = plan(cfg, data)
    budget = "hidden" if cfg.budget == "tuned" else cfg.budget  # tuned: each model's hidden size is whatever its tuning found
    sizes = {name: hidden_sizes(budget, models, passed, data.model_args() | {"lookback": lookback}) for name, _, lookback in conditions}

    # budget=tuned: the architectures' tunings and seeds side by side where cores allow (each its own core, the
    # same moment); otherwise one multirun after the other
    at_once = side_by_side(cfg, len(models)) if cfg.budget == "tuned" and not launcher else 1
    experiment_id = tracking.connect(cfg.tracking.experiment)
    tags = {
        "kind": "comparison",
        "dataset": data.name,
        "machine": machine(),
        "command": " ".join(["python -m forecast.compare", *overrides.task, *launcher]),
        "launcher": ",".join(launcher)
        or ("basic, one process per architecture side by side" if at_once > 1 else "basic (one process, pairs one after the other)"),
    }
    with tracking.start_run(experiment_id, f"compare-{data.name}", tags) as parent:
        run_id = parent.info.run_id
        mlflow.log_params(tracking.flatten(cfg) | {"conditions": ",".join(c[0] for c in conditions), "seeds": ",".join(seeds)})
        mlflow.log_dict(
            {"models": models, "conditions": [c[0] for c in conditions], "seeds": seeds}, "comparison.json"
        )  # the report's plan
        tuned = {}
        if cfg.budget == "tuned":  # each architecture tuned with the same trials and space, before any seed runs
            tuned = comparison_tuning.tune_each(cfg, models, [*passed, *space], run_id, launcher, at_once)
            if isinstance(tuned, int):
                mlflow.end_run("FAILED")
                print(f"error: a tuning failed (its output is above); the comparison run {run_id} is marked FAILED", file=sys.stderr)
                return tuned
        for name, extra, _ in conditions:
            commands = {}
            for group in [[m] for m in models] if tuned else by_hidden_size(models, sizes[name]):
                # replaces the user's model.hidden_size, if any; budget=tuned: the tuning's best settings instead
                hidden = [f"+tuned={tuned[group[0]]}"] if tuned else hidden_override(group, sizes[name])
                # seed before model: the basic launcher then alternates the architectures (gru 0, lstm 0, gru 1, ...),
                # so a load that drifts while the pairs run falls on both alike
                commands["-".join(group)] = command = [
                    sys.executable,
                    "-m",
                    "forecast.train",
                    "-m",
                    f"seed={','.join(seeds)}",
                    f"model={','.join(group)}",
                    *[o for o in passed if not (hidden and config.override_key(o) == "model.hidden_size")],
                    *extra,
                    *hidden,
                    f"tracking.experiment={cfg.tracking.experiment}",
                    f"tracking.parent={run_id}",
                    "+tracking.tags.seed=${seed}",
                    f"+tracking.tags.condition={name}",
                    f"hydra.sweep.dir=multirun/compare-{run_id[:8]}/{name}-{'-'.join(group)}",
                    *launcher,
                ]
                print(f"\n== {name}: {', '.join(group)} x seeds {', '.join(seeds)}\n$ python {' '.join(command[1:])}", flush=True)
            failed = {group: status for group, status in launch_together(commands, at_once).items() if status}
            if failed:
                mlflow.end_run("FAILED")
                group, status = next(iter(failed.items()))
                print(
                    f"error: the training of condition '{name}' ({group}) failed with exit status {status} "
                    "(its output is above);\n"
                    f"the comparison run {run_id} is marked FAILED",
                    file=sys.stderr,
                )
                return 2 if status == 2 else 1  # a training's own crash or signal: this job failed
        missing = unfinished(run_id, parent.info.experiment_id, len(models) * len(seeds) * len(conditions))
        if missing:
            mlflow.end_run("FAILED")
            print(
                f"error: {missing} of the comparison's trainings did not finish (interrupted?); "
                f"the comparison run {run_id} is marked FAILED",
                file=sys.stderr,
            )
            return 1
        speed.measure_comparison(run_id)  # interleaved training steps: other load cancels out
        folder = comparison_report.build(run_id, Path(cfg.report_dir) / run_id)
    print((folder / "verdict.txt").read_text().strip())
    print(f"report: {folder / 'report.md'} (also logged to the parent run {run_id} under report/)")
    print(tracking.ui_hint(experiment_id))
    return 0


def unfinished(run_id: str, experiment_id: str, expected: int) -> int:
    """How many of the expected child runs are not recorded as FINISHED."""
    finished = mlflow.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'FINISHED'", output_format="list"
    )
    return max(expected - len(finished), 0)


if __name__ == "__main__":
    sys.argv = tuning.quote_space(sys.argv)  # budget=tuned: the space's sweeps reach Hydra as text, however the shell quoted them
    main()
