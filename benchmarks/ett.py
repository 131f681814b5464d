"""python -m benchmarks ett: the ETT long-term forecasting table under the standard protocol.

{gru, lstm, linear, last_value} x {ETTh1, ETTm1} x H in {96, 192, 336, 720} at one stated lookback,
as two Hydra multiruns of `forecast.train` (H = 96 with seeds 0, 1, 2; longer horizons with seed
0), every run logged to the MLflow experiment `ett-benchmark`; then benchmarks/results/ett.json
(one row per run) and ett.md (the table, H = 96 as mean ± std of the seeds).

    python -m benchmarks ett                                  # everything, from the repo root
    python -m benchmarks ett --datasets etth1 --models gru    # a part of it
    python -m benchmarks ett --table-only                     # tabulate what MLflow holds
    python -m benchmarks ett -- hydra/launcher=joblib         # extra Hydra overrides (parallel, SLURM...)
    python -m benchmarks ett --tuned --trials 20              # each (dataset, H, cell) tuned on validation, then 3 seeds

With --tuned, every (dataset, horizon, recurrent cell) is first tuned on validation loss with the
same number of trials (`python -m forecast.tune`, experiment `ett-tune`, lookback among
--tune-lookbacks), then trained with each seed at its best settings (`+tuned=<tune run>`, tag
variant=tuned in `ett-benchmark`); benchmarks/results/ett_tuned.{json,md} set the tuned scores beside
the untuned ones at --lookback, the published DLinear and SegRNN figures, and the tuning time per cell.

The ETT files are read where the presets read them: $FORECAST_DATA_DIR, else the cache of
`python -m forecast.datasets fetch ETTh1` (and ETTm1); FORECAST_DATA_DIR=../shared/data uses that folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from collections import defaultdict

from mlflow import MlflowClient

from benchmarks.sweep import RESULTS, latest, machine, mean_spread, multirun, rows, write

EXPERIMENT = "ett-benchmark"
TUNE_EXPERIMENT = "ett-tune"  # the tuning trials: kept apart, so the table never reads a pruned trial
HORIZONS = (96, 192, 336, 720)
NAMES = {"etth1": "ETTh1", "ettm1": "ETTm1"}
# Published scaled test MSE at L = 336 (DLinear) and L = 720 (SegRNN), from their papers.
PUBLISHED = {
    "DLinear": {"ETTh1": (0.375, 0.405, 0.439, 0.472), "ETTm1": (0.299, 0.335, 0.369, 0.425)},
    "SegRNN": {"ETTh1": (0.351, 0.392, 0.423, 0.466), "ETTm1": (0.293, 0.328, 0.357, 0.410)},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ett", description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="etth1,ettm1")
    parser.add_argument("--models", default="gru,lstm,linear,last_value")
    parser.add_argument("--horizons", default=",".join(map(str, HORIZONS)))
    parser.add_argument("--lookback", type=int, default=720, help="L for every run (default 720)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds at H = 96 (longer horizons use the first)")
    parser.add_argument("--table-only", action="store_true", help="tabulate what the MLflow experiment holds")
    parser.add_argument("--tuned", action="store_true", help="tune each (dataset, H, recurrent cell) first, then train its seeds")
    parser.add_argument("--trials", type=int, default=20, help="--tuned: Optuna trials per cell (default 20)")
    parser.add_argument("--tune-lookbacks", default="336,720", help="--tuned: the lookbacks the search may pick")
    parser.add_argument("hydra", nargs="*", help="extra overrides for forecast.train, after --")
    args = parser.parse_args(argv)
    horizons = [int(h) for h in args.horizons.split(",")]
    if args.tuned:
        if not args.table_only:
            tune_cells(args, horizons)
        tabulate_tuned(args.lookback)
        return
    if not args.table_only:
        common = [
            f"data={args.datasets}",
            f"model={args.models}",
            f"data.lookback={args.lookback}",
            f"tracking.experiment={EXPERIMENT}",
            *args.hydra,
        ]
        if 96 in horizons:
            multirun([*common, "data.horizon=96", f"seed={args.seeds}"])
        longer = [h for h in horizons if h != 96]
        if longer:
            multirun([*common, f"data.horizon={','.join(map(str, longer))}", f"seed={args.seeds.split(',')[0]}"])
    tabulate(args.lookback)


def tabulate(lookback: int) -> None:
    found = [r for r in rows(EXPERIMENT) if r["lookback"] == lookback and r["variant"] != "tuned"]
    found = latest(found, key=lambda r: (r["dataset"], r["model"], r["horizon"], r["seed"]))
    found.sort(key=lambda r: (r["dataset"], r["horizon"], r["model"], r["seed"]))
    cells = defaultdict(list)
    for r in found:
        cells[r["dataset"], r["horizon"], r["model"]].append(r)
    models = [m for m in ("gru", "lstm", "linear", "last_value") if any(k[2] == m for k in cells)]
    head = ["dataset", "H", *models, *(f"{p} (published)" for p in PUBLISHED)]
    lines = [
        f"Scaled test MSE / MAE under the standard protocol, L = {lookback}, every test window; "
        f"H = 96: mean ± std over seeds. Machine: {machine()}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * 2 + "---:|" * (len(head) - 2),
    ]
    for dataset, horizon in sorted({k[:2] for k in cells}):
        row = [dataset, str(horizon)]
        for model in models:
            runs = cells.get((dataset, horizon, model), [])
            row.append(f"{mean_spread([r['mse'] for r in runs])} / {statistics.mean(r['mae'] for r in runs):.3f}" if runs else "")
        i = HORIZONS.index(horizon) if horizon in HORIZONS else None
        row += [f"{PUBLISHED[p][dataset][i]:.3f}" if i is not None and dataset in PUBLISHED[p] else "" for p in PUBLISHED]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Cost per cell (median over the runs of the cell): fit seconds, seconds per epoch, epochs to the best checkpoint.",
        "",
        "| dataset | model | params (H = 96) | fit s | s / epoch | epochs to best | runs |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for dataset in sorted({k[0] for k in cells}):
        for model in models:
            runs = [r for k, v in cells.items() if k[0] == dataset and k[2] == model for r in v]
            if runs:
                params = next((r["params"] for r in runs if r["horizon"] == 96), runs[0]["params"])
                epoch_s = [r["epoch_s"] for r in runs if r["epoch_s"]]
                lines.append(
                    f"| {dataset} | {model} | {params:,} | {statistics.median(r['fit_s'] for r in runs):.0f} | "
                    f"{statistics.median(epoch_s) if epoch_s else 0:.1f} | "
                    f"{statistics.median(r['epochs'] for r in runs):.0f} | {len(runs)} |"
                )
    total = sum(r["fit_s"] for r in found)
    lines += ["", f"Total fit time of the {len(found)} runs: {total / 60:.0f} min."]
    write("ett", found, "\n".join(lines))


def tune_cells(args, horizons: list[int]) -> None:
    """Per (dataset, H, cell): forecast.tune on validation, then the seeds at its best settings."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cells = [m for m in args.models.split(",") if m in ("gru", "lstm")]
    for dataset in args.datasets.split(","):
        for horizon in horizons:
            for cell in cells:
                tune = [
                    sys.executable,
                    "-m",
                    "forecast.tune",
                    f"data={dataset}",
                    f"data.horizon={horizon}",
                    f"data.lookback={args.lookback}",
                    f"model={cell}",
                    f"trials={args.trials}",
                    f"tune.params.data.lookback='choice({args.tune_lookbacks})'",
                    f"tracking.experiment={TUNE_EXPERIMENT}",
                    *args.hydra,
                ]
                print("$", shlex.join(tune[1:]), flush=True)
                subprocess.run(tune, check=True, env=env)
                run_id = tune_run(NAMES[dataset], horizon, cell)
                multirun(
                    [f"+tuned={run_id}", f"seed={args.seeds}", f"tracking.experiment={EXPERIMENT}", "+tracking.tags.variant=tuned",
                     f"+tracking.tags.tune_run={run_id}", *args.hydra]
                )  # fmt: skip


def tune_run(dataset: str, horizon: int, cell: str):
    """The newest finished tune run of a cell in the ett-tune experiment (None if there is none)."""
    client = MlflowClient(os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db")
    found = client.get_experiment_by_name(TUNE_EXPERIMENT)
    where = (
        f"tags.kind = 'tune' and tags.dataset = '{dataset}' and tags.architecture = '{cell}' "
        f"and params.`data.horizon` = '{horizon}' and attributes.status = 'FINISHED'"
    )
    runs = client.search_runs([found.experiment_id], where, order_by=["attributes.start_time DESC"]) if found else []
    return runs[0].info.run_id if runs else None


def tabulate_tuned(lookback: int) -> None:
    """The tuned cells beside the untuned ones (at `lookback`) and the published figures; tuning time per cell."""
    found = latest(
        [r for r in rows(EXPERIMENT) if r["variant"] == "tuned"], key=lambda r: (r["dataset"], r["model"], r["horizon"], r["seed"])
    )
    untuned = [r for r in rows(EXPERIMENT) if r["variant"] != "tuned" and r["lookback"] == lookback]
    if not untuned and (RESULTS / "ett.json").is_file():  # this store never ran the untuned table: the last one written
        untuned = [r for r in json.loads((RESULTS / "ett.json").read_text()) if r["lookback"] == lookback]
    client = MlflowClient(os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db")
    cells = defaultdict(list)
    for r in found:
        cells[r["dataset"], r["horizon"], r["model"]].append(r)
    lines = [
        f"Tuned cells: scaled test MSE, mean ± std over seeds at each cell's best settings (chosen on validation loss only). "
        f"Untuned: the defaults at L = {lookback}. Machine: {machine()}.",
        "",
        "| dataset | H | cell | tuned | untuned | DLinear | SegRNN | under DLinear | at or under SegRNN | lookback | trials (all / pruned) "
        "| tuning fit min |",
        "|---|---:|---|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    out = []
    for (dataset, horizon, model), runs in sorted(cells.items()):
        tune_id = runs[0]["tune_run"]
        tune = client.get_run(tune_id) if tune_id else None
        m = tune.data.metrics if tune else {}
        mse = statistics.mean(r["mse"] for r in runs)
        base = [r["mse"] for r in untuned if (r["dataset"], r["horizon"], r["model"]) == (dataset, horizon, model)]
        i = HORIZONS.index(horizon) if horizon in HORIZONS else None
        dlinear, segrnn = (PUBLISHED[p][dataset][i] if i is not None else float("nan") for p in ("DLinear", "SegRNN"))
        row = {
            "dataset": dataset, "horizon": horizon, "model": model, "mse": mse, "seeds": len(runs),
            "untuned": statistics.mean(base) if base else None, "lookback": runs[0]["lookback"], "tune_run": tune_id,
            "trials": m.get("tune/trials"), "pruned": m.get("tune/trials_pruned"), "tuning_fit_s": m.get("tune/fit_s_total"),
        }  # fmt: skip
        out.append(row)
        untuned_text = f"{row['untuned']:.3f}" if base else "not run"
        under = "yes" if mse < dlinear else f"no (+{mse - dlinear:.3f})"
        at_or_under = "yes" if mse <= segrnn else f"no (+{mse - segrnn:.3f})"
        lines.append(
            f"| {dataset} | {horizon} | {model} | {mean_spread([r['mse'] for r in runs])} | {untuned_text} | {dlinear:.3f} | "
            f"{segrnn:.3f} | {under} | {at_or_under} | {row['lookback']} | {row['trials'] or 0:.0f} / {row['pruned'] or 0:.0f} | "
            f"{(row['tuning_fit_s'] or 0) / 60:.1f} |"
        )
    write("ett_tuned", out, "\n".join(lines))
