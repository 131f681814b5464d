"""Run a Hydra multirun of `forecast.train` and read its runs back from MLflow as plain rows."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

RESULTS = Path(__file__).parent / "results"


def multirun(overrides: list[str], env: dict | None = None) -> None:
    """`python -m forecast.train -m <overrides>`, streaming its output; stops on failure."""
    command = [sys.executable, "-m", "forecast.train", "-m", *overrides]
    print("$", shlex.join(command[1:]), flush=True)
    subprocess.run(command, check=True, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})})


def rows(experiment: str) -> list[dict]:
    """One row per finished run of `experiment`, newest first."""
    client = MlflowClient(os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db")
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    out = []
    for run in client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"]):
        p, m, t = run.data.params, run.data.metrics, run.data.tags
        out.append(
            {
                "dataset": t["dataset"],
                "model": t["architecture"],
                "horizon": int(p["data.horizon"]),
                "lookback": int(p["data.lookback"]),
                "seed": int(p["seed"]),
                "mse": m["test/mse_scaled"],
                "mae": m["test/mae_scaled"],
                "val_loss": m.get("val/best_loss"),
                "params": int(m["model/params"]),
                "fit_s": m["time/fit_s"],
                "epoch_s": m.get("time/epoch_s"),
                "epochs": int(m["train/best_epoch"]) + 1 if "train/best_epoch" in m else 0,
                "train_stride": int(p.get("data.train_stride", 1)),
                "run_id": run.info.run_id,
                "variant": t.get("variant"),
                "tune_run": t.get("tune_run"),  # python -m benchmarks ett --tuned: the tuning whose best settings it used
                "command": t.get("command", ""),
                "settings": {k.removeprefix("model."): v for k, v in p.items() if k.startswith("model.") and k != "model._target_"},
            }
        )
    return out


def latest(found: list[dict], key) -> list[dict]:
    """Keep the newest row for each key (a rerun replaces an older result)."""
    seen, kept = set(), []
    for row in found:  # newest first
        if key(row) not in seen:
            seen.add(key(row))
            kept.append(row)
    return kept


def mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def machine() -> str:
    import torch

    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {platform.python_version()}" + (
        f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    )


def write(name: str, table_rows: list[dict], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(table_rows, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown + "\n")
    print(markdown)
    print(f"wrote {RESULTS / (name + '.json')} and {RESULTS / (name + '.md')}")
