"""python -m benchmarks quantiles: calibrated quantile forecasts on ETT, against each cell's point model.

For each dataset and horizon: {gru, lstm, linear, last_value} with `model.quantiles=LEVELS` and
{gru, lstm} as point models (`model.quantiles=null`), at the same settings (L = 720 by default, our
defaults otherwise, seed 0), as Hydra multiruns of `forecast.train` logged to the MLflow experiment
`quantile-benchmark`; then benchmarks/results/quantiles.json (one row per run) and quantiles.md.

    FORECAST_DATA_DIR=../shared/data python -m benchmarks quantiles                   # ETTh1, H = 96
    FORECAST_DATA_DIR=../shared/data python -m benchmarks quantiles --datasets etth1,ettm1 --horizons 96,720
    python -m benchmarks quantiles --table-only                                       # tabulate what MLflow holds

The table answers issue 14's targets: test coverage of the 80% and 95% central intervals against
nominal (within 3 and 2 points), the CRPS against the point model's own MAE (scaled; the CRPS of a
point forecast is its MAE, so at least 10% below), and the median's test MSE against the point
model's (within 2%). Every figure is on the standardised test windows of the standard protocol.
Beside the default calibration (every validation window), the table shows the calibration on the most
recent quarter of the validation windows and the network's own quantiles before calibration (the logged
model with its offsets dropped, forecasting the same test windows).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

EXPERIMENT = "quantile-benchmark"
LEVELS = [0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975]  # intervals 95, 90, 80, 50
QUANTILE_MODELS, POINT_MODELS = "gru,lstm,linear,last_value", "gru,lstm"
NAMES = {"etth1": "ETTh1", "ettm1": "ETTm1"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks quantiles", description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="etth1")
    parser.add_argument("--horizons", default="96")
    parser.add_argument("--lookback", type=int, default=720, help="L for every run (default 720)")
    parser.add_argument("--models", default=QUANTILE_MODELS, help="quantile models")
    parser.add_argument("--point-models", default=POINT_MODELS, help="point models to compare with ('' for none)")
    parser.add_argument("--seed", default="0")
    parser.add_argument("--table-only", action="store_true", help="tabulate what the MLflow experiment holds")
    parser.add_argument("hydra", nargs="*", help="extra overrides for forecast.train, after --")
    args = parser.parse_args(argv)
    from benchmarks.sweep import multirun  # here, not at the top: benchmarks.peers imports LEVELS without MLflow

    if not args.table_only:
        common = [
            f"data={args.datasets}",
            f"data.lookback={args.lookback}",
            f"data.horizon={args.horizons}",
            f"seed={args.seed}",
            f"tracking.experiment={EXPERIMENT}",
            *args.hydra,
        ]
        levels = "[" + ",".join(f"{q:g}" for q in LEVELS) + "]"
        multirun([*common, f"model={args.models}", f"model.quantiles={levels}", "+tracking.tags.variant=quantiles"])
        if args.point_models:
            multirun([*common, f"model={args.point_models}", "+tracking.tags.variant=point"])
    tabulate(args.lookback)


def runs(lookback: int) -> list[dict]:
    """One row per finished run of the experiment at `lookback`, the newest of each (dataset, H, model, variant, seed)."""
    from mlflow import MlflowClient

    from benchmarks.sweep import latest

    client = MlflowClient(os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db")
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is None:
        return []
    out = []
    for run in client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"]):
        p, m, t = run.data.params, run.data.metrics, run.data.tags
        if int(p["data.lookback"]) != lookback:
            continue
        out.append(
            {
                "dataset": t["dataset"],
                "horizon": int(p["data.horizon"]),
                "lookback": lookback,
                "model": t["architecture"],
                "variant": t.get("variant", "point" if "test/crps" not in m else "quantiles"),
                "seed": int(p["seed"]),
                "quantiles": p.get("model.quantiles"),
                "run_id": run.info.run_id,
                "command": t.get("command", ""),
                **{k: v for k, v in m.items() if k.startswith(("test/", "baseline/", "time/fit_s", "val/best_loss", "model/params"))},
            }
        )
    return latest(out, key=lambda r: (r["dataset"], r["horizon"], r["model"], r["variant"], r["seed"]))


def calibrations() -> dict[str, float]:
    """The calibrations the table shows, by `model.calibration_window`: today's default, and the most recent quarter."""
    from omegaconf import OmegaConf

    default = OmegaConf.load(Path(__file__).parents[1] / "conf" / "model" / "gru.yaml").calibration_window
    return {"default": float(default), "recent": 0.25}


def recalibrated(row: dict) -> dict:
    """The logged model's test scores under each of `calibrations()` and without calibration (the network's own
    quantiles; not for a baseline, whose levels come from calibration alone), recomputed from the logged network.

    Calibration comes after training and leaves the network as it is, so a row trained under another default
    gets the figures a training under today's default logs."""
    import mlflow
    from mlflow import MlflowClient
    from omegaconf import OmegaConf

    from forecast import config, evaluate, pyfunc, quantiles, scoring
    from forecast.training import recent

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db")
    forecaster = pyfunc.load(f"runs:/{row['run_id']}/model")[1]
    settings = mlflow.artifacts.load_text(f"{MlflowClient().get_run(row['run_id']).info.artifact_uri}/config.yaml")
    data = config.build(OmegaConf.create(settings).data)
    variants = {}
    for name, share in calibrations().items():
        variants[name] = dataclasses.replace(forecaster)
        origins = recent(data.datasets["val"].origins, share, quantiles.windows_needed(forecaster.levels))
        variants[name].calibrate(*forecaster.windows(data.frame, origins))
    if row["model"] not in ("last_value", "seasonal_naive"):
        variants["uncalibrated"] = dataclasses.replace(forecaster, offsets=None)
    out = {}
    for name, f in variants.items():
        test = evaluate.forecast_test(f, data.frame, data.datasets["test"].origins)
        out |= {f"{name}/{k}": v for k, v in scoring.score_quantiles(test.quantiles, test.levels, test.actual, test.std).items()}
    return out


def published_point(row: dict) -> dict | None:
    """The point model of the same cell, data, L, H and seed from `python -m benchmarks ett` (results/ett.json),
    when this experiment holds none; the point path is the same code, so the figures are those a rerun gives."""
    from benchmarks.sweep import RESULTS

    path = RESULTS / "ett.json"
    key = (row["dataset"], row["model"], row["horizon"], row["lookback"], row["seed"])
    for r in json.loads(path.read_text()) if path.is_file() else []:
        if (r["dataset"], r["model"], r["horizon"], r["lookback"], r["seed"]) == key:
            return {"test/mae_scaled": r["mae"], "test/mse_scaled": r["mse"], "time/fit_s": r["fit_s"], "source": "ett.json"}
    return None


def beside(row: dict, name: str) -> str:
    """Coverage of the 80% and 95% intervals and the CRPS of one of `recalibrated`'s variants; '-' where it has none."""
    if f"{name}/crps" not in row:
        return "-"
    return f"{row[f'{name}/coverage_80']:.3f} / {row[f'{name}/coverage_95']:.3f} ({row[f'{name}/crps']:.4f})"


def tabulate(lookback: int) -> None:
    from benchmarks.sweep import machine, write

    found = sorted(runs(lookback), key=lambda r: (r["dataset"], r["horizon"], r["model"], r["variant"]))
    point = {(r["dataset"], r["horizon"], r["model"], r["seed"]): r for r in found if r["variant"] == "point"}
    share = calibrations()["default"]
    lines = [
        f"Calibrated quantile forecasts, standard protocol, L = {lookback}, every test window, scaled values. "
        f"Levels {', '.join(f'{q:g}' for q in LEVELS)}, calibrated on {'every' if share == 1 else f'the most recent {share:.0%} of the'} "
        f"validation window{'' if share == 1 else 's'} (the default, `model.calibration_window={share:g}`; split-conformal per step "
        f"and target). Machine: {machine()}; "
        "shared with other work while measured, so fit times are only indicative.",
        "",
        "| dataset | H | model | CRPS | point MAE | CRPS / point MAE | cov. 80 (Δ) | cov. 95 (Δ) | cov. 50 | width 80 | width 95 "
        "| recent quarter of val: cov. 80 / 95 (CRPS) | uncalibrated: cov. 80 / 95 (CRPS) "
        "| median MSE | point MSE | median / point MSE | fit s (q / point) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in (r for r in found if r["variant"] == "quantiles"):
        p = point.get((r["dataset"], r["horizon"], r["model"], r["seed"])) or published_point(r)
        if r["model"] == "last_value":  # its point forecast is the median itself
            p = {"test/mae_scaled": r["test/mae_scaled"], "test/mse_scaled": r["test/mse_scaled"], "time/fit_s": 0.0}
        mae = p["test/mae_scaled"] if p else None
        r |= recalibrated(r)
        d = {k.removeprefix("default/"): v for k, v in r.items() if k.startswith("default/")}
        r |= {
            "point_mae": mae,
            "crps_vs_point_mae": d["crps"] / mae if mae else None,
            "point_mse": p["test/mse_scaled"] if p else None,
            "median_vs_point_mse": r["test/mse_scaled"] / p["test/mse_scaled"] if p else None,
        }

        cells = [
            NAMES.get(r["dataset"].lower(), r["dataset"]),
            str(r["horizon"]),
            r["model"],
            f"{d['crps']:.4f}",
            f"{mae:.4f}" if mae else "",
            f"{r['crps_vs_point_mae']:.3f}" if mae else "",
            f"{d['coverage_80']:.3f} ({100 * (d['coverage_80'] - 0.8):+.1f})",
            f"{d['coverage_95']:.3f} ({100 * (d['coverage_95'] - 0.95):+.1f})",
            f"{d['coverage_50']:.3f}",
            f"{d['interval_width_80']:.3f}",
            f"{d['interval_width_95']:.3f}",
            beside(r, "recent"),
            beside(r, "uncalibrated"),
            f"{r['test/mse_scaled']:.4f}",
            (f"{r['point_mse']:.4f}" + (" †" if p.get("source") else "")) if p else "",
            f"{r['median_vs_point_mse']:.3f}" if p else "",
            f"{r['time/fit_s']:.0f} / {p['time/fit_s']:.0f}" if p else f"{r['time/fit_s']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "CRPS: 2 x the pinball loss integrated over the levels by the midpoint rule (forecast/scoring.py); a point "
        "forecast's is its MAE. cov. 80 / 95: share of test values inside the calibrated 80% / 95% central interval (Δ: "
        "points from nominal). width: in training-span standard deviations. Every calibrated figure is recomputed here "
        "from the logged network (calibration follows training and leaves the network as it is). recent quarter of val: "
        "calibrated on the most recent quarter of the validation windows (`model.calibration_window=0.25`). uncalibrated:"
        " the network's own quantiles (offsets dropped). median / point MSE: the quantile model's median against the "
        "point model of the same cell and settings (last_value: the median is the last value). †: the point model's "
        "figures from results/ett.json (`python -m benchmarks ett`, the same command and seed; the point path is "
        "unchanged by quantiles).",
    ]
    write("quantiles", found, "\n".join(lines))
