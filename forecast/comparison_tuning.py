"""budget=tuned: before a comparison's seeds, each architecture tuned with the same trials and search space.

`python -m forecast.compare budget=tuned trials=N` calls `tune_each`: one `python -m forecast.tune`
per architecture (each its own parent run, tag kind=tune, linked to the comparison by the tag
`comparison`), then logs the tuning cost per architecture as `tuning.json` on the comparison's run,
which the report shows (forecast/comparison_report.py).
"""

from __future__ import annotations

import sys

import mlflow
from mlflow import MlflowClient
from omegaconf import DictConfig

from forecast import tracking
from forecast.children import launch_together

COST = ("tune/trials", "tune/trials_complete", "tune/trials_pruned", "tune/trials_failed", "tune/fit_s_total", "tune/best_val_loss")


def tune_each(
    cfg: DictConfig, models: list[str], passed: list[str], comparison_id: str, plugins: list[str], at_once: int
) -> dict[str, str] | int:
    """Tune every model with `cfg.trials` trials, `at_once` tunings side by side (forecast.children.side_by_side);
    their tune run ids, or the exit status of a tuning that failed."""
    commands = {
        model: [
            sys.executable,
            "-m",
            "forecast.tune",
            f"model={model}",
            f"trials={cfg.trials}",
            *passed,
            f"tracking.experiment={cfg.tracking.experiment}",
            f"+tracking.tags.comparison={comparison_id}",
            *plugins,
        ]
        for model in models
    }
    together = f", {at_once} at a time side by side (output lines prefixed [model])" if at_once > 1 else ""
    for model, command in commands.items():
        print(f"\n== tuning {model}: {cfg.trials} trials{together}\n$ python {' '.join(command[1:])}", flush=True)
    statuses = launch_together(commands, at_once)
    failed = [s for s in statuses.values() if s]
    if failed:
        return 2 if 2 in failed else 1
    client = MlflowClient(tracking.tracking_uri())
    experiment_id = client.get_run(comparison_id).info.experiment_id
    runs, cost = {}, {}
    for model in models:
        where = f"tags.kind = 'tune' and tags.comparison = '{comparison_id}' and tags.architecture = '{model}'"
        (run, *_) = client.search_runs([experiment_id], where, order_by=["attributes.start_time DESC"])
        runs[model] = run.info.run_id
        cost[model] = {"run_id": run.info.run_id, **{k.removeprefix("tune/"): run.data.metrics.get(k) for k in COST}}
    mlflow.log_dict(cost, "tuning.json")
    for model, c in cost.items():
        mlflow.log_metrics({f"tuning/{model}/fit_s_total": c["fit_s_total"], f"tuning/{model}/trials": c["trials"]})
    return runs


def report_lines(parent) -> list[str]:
    """The report's section on the tuning cost per architecture; nothing unless the comparison ran with budget=tuned."""
    if parent.data.params.get("budget") != "tuned":
        return []
    cost = mlflow.artifacts.load_dict(f"{parent.info.artifact_uri}/tuning.json")
    lines = [
        "## Tuning (budget=tuned)",
        "",
        "Each architecture was tuned on validation loss with the same number of trials and the same search space "
        "(`python -m forecast.tune`), then trained with every seed at its best settings (`+tuned=<tune run>`).",
        "",
        "| model | tune run | trials | completed | pruned | failed | total fit s | best val loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, c in cost.items():
        lines.append(
            f"| {model} | `{c['run_id']}` | {c['trials']:.0f} | {c['trials_complete']:.0f} | {c['trials_pruned']:.0f} | "
            f"{c['trials_failed']:.0f} | {c['fit_s_total']:.0f} | {c['best_val_loss']:.4f} |"
        )
    return [*lines, ""]
