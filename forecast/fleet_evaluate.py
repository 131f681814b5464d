"""A fleet model on the test span: every device's windows forecast, scored per device and over the fleet.

Interface:

    fleet_test(forecaster, data) -> FleetTest
        Every test window of every device goes through `Forecaster.forecast` with its device's own
        scaler (and device number), in chunks, so memory stays at one chunk of forecasts; errors
        come from `forecast.scoring.score`, as everywhere else. Cells masked in a window (a channel
        not fully valid there) count in no score.
    FleetTest.metrics: `test/*` and `baseline/*` (last value) under today's names, over every valid
        cell of the fleet, plus `test/series_mse_scaled_p50` and `_p90` across devices.
    FleetTest.by_series: one row per device with test windows: id column(s), windows, mae, rmse,
        mse_scaled, mae_scaled, baseline_mse_scaled (evaluation/test_by_series.parquet).
    FleetTest.by_step, FleetTest.by_window (origin: the window's row in the stacked array, unique per
        window and the same across runs on the same data; timestamp; series: device number; the four scores).
    forecast_split(forecaster, data, split) -> TestForecasts of every window of a split at once
        (series [N], std [N, 1, T], actual NaN where masked): for holdouts and comparisons.
    log_fleet_evaluation(tmp, data, forecaster, test, title): logs evaluation/test_by_series.parquet,
        test_by_step.parquet, test_by_window.parquet (up to 2M windows), example_window.parquet (as a
        single series has it, plus the device's id column(s)), data_by_series.parquet
        (the ingestion table) and plots/worst_series.png (the ten devices with the largest scaled MSE).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from forecast import scoring  # noqa: E402
from forecast.evaluate import TestForecasts  # noqa: E402
from forecast.fleet_windows import wall_clock  # noqa: E402
from forecast.forecaster import Forecaster  # noqa: E402
from forecast.windows import Scaler  # noqa: E402

_SCORES = ("mse_scaled", "mae_scaled", "mae", "rmse")
_MAX_WINDOW_ROWS = 2_000_000


@dataclass
class FleetTest:
    """Scores of every test window of a fleet (see the module docstring)."""

    metrics: dict[str, float]
    by_series: pd.DataFrame
    by_step: pd.DataFrame
    by_window: pd.DataFrame
    origins: np.ndarray  # [N] rows of data.fleet.values
    series: np.ndarray  # [N] device number of each window
    devices: np.ndarray  # device number of each row of by_series


def device_windows(forecaster: Forecaster, data, indices: np.ndarray, split: str = "test"):
    """Raw inputs [n, L, C], actual values [n, H, T] (NaN where masked), per-window scaler [n, 1, C] and device numbers [n]."""
    x, y, series, *_ = data.datasets[split].__getitems__(indices)
    s = series.numpy()
    scaler = Scaler(data.mean[s][:, None, :], data.std[s][:, None, :])  # [n, 1, C] each
    raw = x.numpy().astype(np.float64) * scaler.std + scaler.mean  # [n, L, C] data units
    t = forecaster.target_index
    actual = y.numpy().astype(np.float64) * scaler.std[..., t] + scaler.mean[..., t]  # [n, H, T]
    return raw, actual, scaler, s


def network_inputs(forecaster: Forecaster, data, indices: np.ndarray, s: np.ndarray, split: str = "test") -> dict:
    """`Forecaster.forecast`'s optional inputs for these windows of a split: series [n] (device numbers), and for a network
    that reads them origin [n] (wall-clock ns of the first forecast step) and static [n, S] (codes of the model's vocabulary)."""
    inputs = {"series": s}
    if "origin" in forecaster.uses:
        fleet = data.fleet
        inputs["origin"] = wall_clock(fleet.first, fleet.start, fleet.step, fleet.tz, data.datasets[split].origins[indices], s)
    if "static" in forecaster.uses:
        inputs["static"] = forecaster.static_codes(data.fleet.static[forecaster.static_columns].to_numpy()[s])
    return inputs


def forecast_split(forecaster: Forecaster, data, split: str = "test") -> TestForecasts:
    """Every window of a split as `TestForecasts` (series and per-device std [N, 1, T] set; actual NaN where masked).

    Holds all forecasts at once: for a fleet's holdout or a comparison; `fleet_test` scores a whole test span in chunks.
    """
    every = np.arange(len(data.datasets[split]))
    raw, actual, scaler, s = device_windows(forecaster, data, every, split)
    pred = forecaster.forecast(raw, scaler=scaler, **network_inputs(forecaster, data, every, s, split))
    last = scoring.last_value(raw, forecaster.target_index, data.horizon)
    return TestForecasts(data.datasets[split].origins, pred, actual, last, scaler.std[..., forecaster.target_index], series=s)


def fleet_test(forecaster: Forecaster, data, chunk: int = 65_536) -> FleetTest:
    dataset = data.datasets["test"]
    n, t = len(dataset), forecaster.target_index
    devices = len(data.fleet)
    sums = {f"{who}/{k}": np.zeros(devices) for who in ("test", "baseline") for k in _SCORES}
    cells, windows = np.zeros(devices), np.zeros(devices, np.int64)
    step_sums, step_cells = {k: np.zeros(data.horizon) for k in _SCORES}, np.zeros(data.horizon)
    per_window = {k: np.empty(n, np.float32) for k in _SCORES}
    series_all = np.empty(n, np.int64)
    for start in range(0, n, chunk):
        indices = np.arange(start, min(start + chunk, n))
        raw, actual, scaler, s = device_windows(forecaster, data, indices)
        pred = forecaster.forecast(raw, scaler=scaler, **network_inputs(forecaster, data, indices, s))  # [n, H, T]
        last = scoring.last_value(raw, t, data.horizon)  # [n, H, T]
        valid = ~np.isnan(actual)  # [n, H, T]
        actual0 = np.where(valid, actual, 0.0)
        std = scaler.std[..., t]  # [n, 1, T]
        count = valid.sum(axis=(1, 2))  # [n] valid cells per window
        series_all[indices] = s
        windows += np.bincount(s, minlength=devices)
        cells += np.bincount(s, weights=count, minlength=devices)
        for who, forecast in (("test", pred), ("baseline", last)):
            scores = _cell_sums(np.where(valid, forecast, 0.0), actual0, std, (1, 2))  # [n] sums over a window's cells
            for k in _SCORES:
                sums[f"{who}/{k}"] += np.bincount(s, weights=scores[k], minlength=devices)
                if who == "test":
                    per_window[k][indices] = scores[k] / np.maximum(count, 1) if k != "rmse" else np.sqrt(scores[k] / np.maximum(count, 1))
        by_step = _cell_sums(np.where(valid, pred, 0.0), actual0, std, (0, 2))  # [H]
        for k in _SCORES:
            step_sums[k] += by_step[k]
        step_cells += valid.sum(axis=(0, 2))

    total = cells.sum()
    metrics = {}
    for key, values in sums.items():
        mean = values.sum() / total
        metrics[key] = float(np.sqrt(mean) if key.endswith("/rmse") else mean)
    seen = windows > 0
    per_device = {k: sums[f"test/{k}"][seen] / cells[seen] for k in _SCORES}
    per_device["rmse"] = np.sqrt(per_device["rmse"])
    by_series = data.fleet.ids[seen].reset_index(drop=True)
    by_series["windows"] = windows[seen]
    for k in ("mae", "rmse", "mse_scaled", "mae_scaled"):
        by_series[k] = per_device[k]
    by_series["baseline_mse_scaled"] = sums["baseline/mse_scaled"][seen] / cells[seen]
    metrics["test/series_mse_scaled_p50"] = float(np.percentile(per_device["mse_scaled"], 50))
    metrics["test/series_mse_scaled_p90"] = float(np.percentile(per_device["mse_scaled"], 90))
    steps = pd.DataFrame({"step": np.arange(1, data.horizon + 1)})
    for k in _SCORES:
        mean = step_sums[k] / np.maximum(step_cells, 1)
        steps[k] = np.sqrt(mean) if k == "rmse" else mean
    origins = dataset.origins
    stamps = data.fleet.first[series_all] + (origins - data.fleet.start[series_all]) * data.fleet.step  # [N] ns
    when = pd.to_datetime(stamps, utc=data.fleet.tz is not None)
    when = when.tz_convert(data.fleet.tz) if data.fleet.tz is not None else when
    by_window = pd.DataFrame({"origin": origins, "timestamp": when, "series": series_all, **per_window})
    return FleetTest(metrics, by_series, steps, by_window, origins, series_all, np.flatnonzero(seen))


def _cell_sums(pred: np.ndarray, actual: np.ndarray, std: np.ndarray, axis) -> dict[str, np.ndarray]:
    """scoring.score's errors summed (not averaged) over `axis`; rmse gives the sum of squared errors in data units."""
    cells = np.prod([pred.shape[a] for a in axis])
    scores = scoring.score(pred, actual, std, axis=axis)
    return {k: (v**2 if k == "rmse" else v) * cells for k, v in scores.items()}


def log_fleet_evaluation(tmp: Path, data, forecaster: Forecaster, test: FleetTest, title: str) -> None:
    """The per-device, per-step and per-window tables, the ingestion table and the plot of the worst devices."""
    tables = {"test_by_series.parquet": test.by_series, "test_by_step.parquet": test.by_step}
    tables["example_window.parquet"] = example_window(data, forecaster, test)
    if len(test.by_window) <= _MAX_WINDOW_ROWS:
        tables["test_by_window.parquet"] = test.by_window
    tables["data_by_series.parquet"] = data.report.devices.astype({c: str for c in ("first", "last")})
    for name, frame in tables.items():
        frame.to_parquet(tmp / name, index=False)
        mlflow.log_artifact(str(tmp / name), "evaluation")
    mlflow.log_artifact(str(plot_worst(data, forecaster, test, title, tmp / "worst_series.png")), "plots")


def plot_worst(data, forecaster: Forecaster, test: FleetTest, title: str, path: Path, count: int = 10) -> Path:
    """The `count` devices with the largest scaled MSE: actual values of the first target over the test span and back-to-back forecasts."""
    worst = test.by_series.sort_values("mse_scaled", ascending=False).head(count)
    numbers = test.devices[worst.index.to_numpy()]
    fig, axes = plt.subplots(len(numbers), 1, figsize=(11, 1.9 * len(numbers)), squeeze=False)
    for ax, d, (_, row) in zip(axes[:, 0], numbers, worst.iterrows()):
        mine = np.flatnonzero(test.series == d)[:: data.horizon]  # windows H apart: no overlap
        raw, actual, scaler, s = device_windows(forecaster, data, mine)
        pred = forecaster.forecast(raw, scaler=scaler, **network_inputs(forecaster, data, mine, s))
        for j, at in enumerate(mine):
            origin = test.by_window["timestamp"].iloc[at]
            stamps = pd.date_range(origin, periods=data.horizon, freq=pd.Timedelta(int(data.fleet.step)))
            ax.plot(stamps, actual[j, :, 0], color="0.35", lw=0.9, label="actual" if j == 0 else None)
            ax.plot(stamps, pred[j, :, 0], color="tab:orange", lw=1.0, label="forecast" if j == 0 else None)
        name = "/".join(str(row[c]) for c in data.series_columns)
        ax.set_ylabel(name, fontsize=8)
        ax.set_title(f"{name}: scaled MSE {row['mse_scaled']:.3f} over {row['windows']:,} windows", fontsize=8, loc="left")
    axes[0, 0].legend(loc="upper right", fontsize=7)
    fig.suptitle(f"{title}: the {len(numbers)} devices with the largest test error ({data.targets[0]})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def example_input(data, forecaster: Forecaster, test: FleetTest, devices: int = 2) -> pd.DataFrame:
    """The served model's input example: the last test window's input of the last `devices` devices with test windows
    (each device's last L readings before its origin, data units), in long form: id column(s), timestamp, inputs."""
    last = np.unique(test.series[::-1], return_index=True)[1]  # per device: its last window, counted from the end
    chosen = np.sort(len(test.series) - 1 - last)[-devices:]  # [n] indices of the last windows of the last devices
    raw, _, _, s = device_windows(forecaster, data, chosen)  # [n, L, C]
    step = pd.Timedelta(int(data.fleet.step))
    parts = []
    for j, at in enumerate(chosen):
        origin = test.by_window["timestamp"].iloc[at]
        part = pd.DataFrame(raw[j], columns=data.inputs)
        part.insert(0, "timestamp", pd.date_range(end=origin - step, periods=data.lookback, freq=step))
        for k, name in enumerate(data.series_columns):
            part.insert(k, name, data.fleet.ids[name].iloc[s[j]])
        for name in forecaster.static_columns:  # a model with static columns reads them from the request
            part.insert(len(data.series_columns), name, data.fleet.static[name].iloc[s[j]])
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def example_window(data, forecaster: Forecaster, test: FleetTest) -> pd.DataFrame:
    """The last test window (its device's id column(s), timestamp, targets over L + H steps, `<target>:forecast` over the last H)."""
    at = np.array([len(test.origins) - 1])
    raw, actual, scaler, s = device_windows(forecaster, data, at)
    pred = forecaster.forecast(raw, scaler=scaler, **network_inputs(forecaster, data, at, s))
    step = pd.Timedelta(int(data.fleet.step))
    origin = test.by_window["timestamp"].iloc[-1]
    frame = pd.DataFrame({"timestamp": pd.date_range(origin - data.lookback * step, periods=data.lookback + data.horizon, freq=step)})
    for name, value in data.fleet.ids.iloc[int(s[0])].items():
        frame[name] = value
    t = forecaster.target_index
    for k, name in enumerate(data.targets):
        frame[name] = np.concatenate([raw[0, :, t[k]], actual[0, :, k]])
        frame[f"{name}:forecast"] = np.concatenate([np.full(data.lookback, np.nan), pred[0, :, k]])
    return frame
