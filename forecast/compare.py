"""python -m forecast.compare: GRU or LSTM for this data? Measure it, with its uncertainty.

    python -m forecast.compare                                   # gru and lstm, seeds 0-2, sample data
    python -m forecast.compare data=etth1 budget=params          # parameter counts matched within 2%
    python -m forecast.compare small_data=true 'lookbacks=[720]' # also on 10% / 25% of the training span, and at L = 720
    python -m forecast.compare hydra/launcher=joblib             # pairs in parallel processes (pip install -e ".[compare]")

One MLflow parent run (tag kind=comparison) holds one child run per (condition, architecture,
seed): every child is an ordinary `python -m forecast.train` run, launched as a Hydra multirun
with the user's overrides, so the launcher (basic, joblib, submitit_slurm) decides where the
pairs run. The comparison then builds its report from MLflow (`forecast.report`), logs it to the
parent run and writes it to <report_dir>/<parent run id>/.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import hydra
import mlflow
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import MissingConfigException
from omegaconf import DictConfig

from forecast import report, speed, tracking
from forecast.errors import InputError, reported
from forecast.model import count_parameters
from forecast.train import build

OWN_KEYS = {"models", "seeds", "budget", "small_data", "lookbacks", "report_dir"}   # compare's, not train's
SET_HERE = {"seed", "tracking.parent", "tracking.experiment", "hydra.sweep.dir"}     # compare sets these per child
SMALL_DATA = (0.25, 0.1)                                                             # training fractions of small_data=true
TOLERANCE = 0.02                                                                     # budget=params: relative mismatch allowed


@hydra.main(version_base="1.3", config_path="../conf", config_name="compare")
def main(cfg: DictConfig) -> None:
    signal.signal(signal.SIGTERM, interrupt)          # `kill` marks the parent run KILLED and stops its trainings
    try:
        with reported():
            status = compare(cfg)
    except KeyboardInterrupt:
        print("interrupted: the comparison run is marked KILLED", file=sys.stderr)
        sys.exit(130)
    if status:
        sys.exit(status)


def interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def compare(cfg: DictConfig) -> int:
    """Check every setting, train all pairs as children of one parent run, then report; returns the exit status."""
    overrides = HydraConfig.get().overrides
    passed = pass_on(list(overrides.task))
    launcher = [o for o in overrides.hydra if key_of(o).startswith(("hydra/launcher", "hydra.launcher"))]
    models, seeds = [str(m) for m in cfg.models], seed_list(cfg.seeds)
    if len(models) < 2 or len(set(models)) < len(models):
        raise InputError(f"models={models}: name two or more different model configs, e.g. models=[gru,lstm]")
    if cfg.budget not in ("hidden", "params"):
        raise InputError(f"budget={cfg.budget!r} is not one of hidden, params")
    speed.use_threads(cfg.threads)                           # as the trainings will run (and a bad value fails here)

    data = build(cfg.data)                                   # data errors surface before any run exists
    conditions = plan(cfg, data)
    sizes = {name: hidden_sizes(cfg.budget, models, passed, data.model_args() | {"lookback": lookback})
             for name, _, lookback in conditions}

    experiment_id = tracking.connect(cfg.tracking.experiment)
    tags = {"kind": "comparison", "dataset": data.name, "machine": machine(),
            "command": " ".join(["python -m forecast.compare", *overrides.task, *launcher]),
            "launcher": ",".join(launcher) or "basic (one process, pairs one after the other)"}
    with tracking.start_run(experiment_id, f"compare-{data.name}", tags) as parent:
        run_id = parent.info.run_id
        mlflow.log_params(tracking.flatten(cfg) | {"conditions": ",".join(c[0] for c in conditions), "seeds": ",".join(seeds)})
        for name, extra, _ in conditions:
            for group in by_hidden_size(models, sizes[name]):
                hidden = hidden_override(group, sizes[name])   # replaces the user's model.hidden_size, if any
                # seed before model: the basic launcher then alternates the architectures (gru 0, lstm 0, gru 1, ...),
                # so a load that drifts while the pairs run falls on both alike
                command = [sys.executable, "-m", "forecast.train", "-m", f"seed={','.join(seeds)}", f"model={','.join(group)}",
                           *[o for o in passed if not (hidden and key_of(o) == "model.hidden_size")], *extra, *hidden,
                           f"tracking.experiment={cfg.tracking.experiment}", f"tracking.parent={run_id}",
                           "+tracking.tags.seed=${seed}", f"+tracking.tags.condition={name}",
                           f"hydra.sweep.dir=multirun/compare-{run_id[:8]}/{name}-{'-'.join(group)}", *launcher]
                print(f"\n== {name}: {', '.join(group)} x seeds {', '.join(seeds)}\n$ python {' '.join(command[1:])}", flush=True)
                status = launch(command)
                if status:
                    mlflow.end_run("FAILED")
                    print(f"error: the training of condition '{name}' ({', '.join(group)}) failed with exit status {status} (its output is above);\n"
                          f"the comparison run {run_id} is marked FAILED", file=sys.stderr)
                    return status
        missing = unfinished(run_id, parent.info.experiment_id, len(models) * len(seeds) * len(conditions))
        if missing:
            mlflow.end_run("FAILED")
            print(f"error: {missing} of the comparison's trainings did not finish (interrupted?); the comparison run {run_id} is marked FAILED",
                  file=sys.stderr)
            return 1
        speed.measure_comparison(run_id)                  # interleaved training steps: other load cancels out
        folder = report.build(run_id, Path(cfg.report_dir) / run_id)
    print((folder / "verdict.txt").read_text().strip())
    print(f"report: {folder / 'report.md'} (also logged to the parent run {run_id} under report/)")
    print(tracking.ui_hint(experiment_id))
    return 0


def launch(command: list[str]) -> int:
    """Run one multirun; if the comparison is interrupted, stop it with SIGTERM so its current run is marked FAILED."""
    child = subprocess.Popen(command)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.terminate()
        child.wait(timeout=120)
        raise


def unfinished(run_id: str, experiment_id: str, expected: int) -> int:
    """How many of the expected child runs are not recorded as FINISHED."""
    finished = mlflow.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'FINISHED'", output_format="list")
    return max(expected - len(finished), 0)


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def pass_on(task: list[str]) -> list[str]:
    """The user's overrides that every training receives: all but compare's own keys and what compare sets."""
    for override in task:
        if key_of(override) == "model":
            raise InputError(f"'{override}': name the architectures with models=[...], e.g. models=[gru,lstm]")
    return [o for o in task if key_of(o) not in OWN_KEYS | SET_HERE]


def seed_list(seeds) -> list[str]:
    """`seeds`: a count n (seeds 0 .. n-1) or an explicit list."""
    if isinstance(seeds, int) and seeds >= 1:
        return [str(s) for s in range(seeds)]
    if not isinstance(seeds, (int, str)) and len(seeds) >= 1 and all(isinstance(s, int) for s in seeds):
        return [str(s) for s in seeds]
    raise InputError(f"seeds={seeds}: give a positive number of seeds (e.g. seeds=3) or a list of integers (seeds=[0,7])")


def plan(cfg: DictConfig, data) -> list[tuple[str, list[str], int]]:
    """The sub-comparisons: (condition tag, overrides of its children, lookback). `base` comes first."""
    conditions = [("base", [], data.lookback)]
    if cfg.small_data:
        conditions += [(f"train-{round(f * 100)}%", [f"++data.train_fraction={f}"], data.lookback) for f in SMALL_DATA]
    for lookback in cfg.lookbacks:
        if int(lookback) != data.lookback:
            build(cfg.data, lookback=int(lookback))            # the data must hold windows of this lookback too
            conditions.append((f"lookback-{int(lookback)}", [f"data.lookback={int(lookback)}"], int(lookback)))
    return conditions


def hidden_sizes(budget: str, models: list[str], passed: list[str], model_args: dict) -> dict[str, int | None]:
    """Each model's hidden size (None for a model without one). budget=params solves all but the first
    so that their parameter counts match the first model's within 2%."""
    configs = {m: model_config(m, passed) for m in models}
    sizes = {m: int(c.hidden_size) if "hidden_size" in c else None for m, c in configs.items()}
    if budget == "hidden":
        for m, c in configs.items():
            count(c, None, model_args)                       # a bad model setting fails here, before any run
        return sizes
    reference, target = models[0], count(configs[models[0]], sizes[models[0]], model_args)
    for m in models[1:]:
        if sizes[m] is None:
            raise InputError(f"budget=params: model '{m}' has no model.hidden_size to solve; compare recurrent models or use budget=hidden")
        low, high = 1, 4 * max(sizes[m], 8)                 # smallest hidden size whose count reaches the target
        while low < high:
            mid = (low + high) // 2
            low, high = (mid + 1, high) if count(configs[m], mid, model_args) < target else (low, mid)
        sizes[m] = min((low - 1, low), key=lambda h: abs(count(configs[m], h, model_args) - target) if h >= 1 else target)
        mismatch = abs(count(configs[m], sizes[m], model_args) - target) / target
        if mismatch > TOLERANCE:
            raise InputError(f"budget=params: no hidden size of '{m}' comes within 2% of the {target:,} parameters of '{reference}' (best {mismatch:.1%})")
    return sizes


def model_config(model: str, passed: list[str]) -> DictConfig:
    """conf/model/<model>.yaml with the user's overrides applied."""
    try:
        return hydra.compose("compare", overrides=[*passed, f"model={model}"]).model
    except MissingConfigException:
        known = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "model").glob("*.yaml"))
        raise InputError(f"models: no model config '{model}' in conf/model; choose from {', '.join(known)}") from None


def count(model_cfg: DictConfig, hidden_size: int | None, model_args: dict) -> int:
    """Trainable parameters of the network `model_cfg` builds for this data (at `hidden_size` if given)."""
    extra = {} if hidden_size is None else {"hidden_size": hidden_size}
    n = model_args["n_inputs"]
    module = build(model_cfg, **model_args, **extra, mean=[0.0] * n, std=[1.0] * n)
    return count_parameters(module.net)["params"]


def by_hidden_size(models: list[str], sizes: dict[str, int | None]) -> list[list[str]]:
    """Models that share a hidden size train in one multirun; models solved to other sizes get their own."""
    groups: dict[int | None, list[str]] = {}
    for m in models:
        groups.setdefault(sizes[m], []).append(m)
    return list(groups.values())


def hidden_override(group: list[str], sizes: dict[str, int | None]) -> list[str]:
    size = sizes[group[0]]
    return [] if size is None else [f"model.hidden_size={size}"]


def machine() -> str:
    """Where the comparison ran (the children's hosts are in their `process` tags)."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
