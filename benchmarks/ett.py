"""python -m benchmarks ett: the ETT long-term forecasting table under the standard protocol.

{gru, lstm, linear, last_value} x {ETTh1, ETTm1} x H in {96, 192, 336, 720} at one stated lookback,
as two Hydra multiruns of `forecast.train` (H = 96 with seeds 0, 1, 2; longer horizons with seed
0), every run logged to the MLflow experiment `ett-benchmark`; then benchmarks/results/ett.json
(one row per run) and ett.md (the table, H = 96 as mean ± std of the seeds).

    python -m benchmarks ett                                  # everything, from the repo root
    python -m benchmarks ett --datasets etth1 --models gru    # a part of it
    python -m benchmarks ett --table-only                     # tabulate what MLflow holds
    python -m benchmarks ett -- hydra/launcher=joblib         # extra Hydra overrides (parallel, SLURM...)

The ETT files are read where the presets read them: $FORECAST_DATA_DIR, else the cache of
`python -m forecast.datasets fetch ETTh1` (and ETTm1); FORECAST_DATA_DIR=../shared/data uses that folder.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

from benchmarks.sweep import latest, machine, mean_spread, multirun, rows, write

EXPERIMENT = "ett-benchmark"
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
    parser.add_argument("hydra", nargs="*", help="extra overrides for forecast.train, after --")
    args = parser.parse_args(argv)
    horizons = [int(h) for h in args.horizons.split(",")]
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
    found = [r for r in rows(EXPERIMENT) if r["lookback"] == lookback]
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
