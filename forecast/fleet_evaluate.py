"""A fleet model on the test span: every device's windows forecast, scored per device and over the fleet.

No process needs the whole fleet: each one forecasts the test windows of the devices it holds
(`score_part`: every device for one process, its share under trainer=ddp, forecast/fleet_share.py),
and rank zero combines the parts (`combine`, a pure function of the parts) into the figures one
process holding every device computes: the scores are sums over valid cells, so they add up across
processes. What a part carries is small: a row per device, a sum per horizon step, a few devices'
series for the plot and the served model's example; the per-window table only when it is logged.

Interface:

    fleet_test(forecaster, data) -> FleetTest on rank zero (None on the other ranks of a process group):
        `score_part` on this process's devices, gathered to rank zero (`fleet_share.gather`), `combine`d.
    score_part(forecaster, data, by_window=True) -> FleetPart: every test window of this process's devices
        goes through `Forecaster.forecast` with its device's own scaler (and device number), in chunks, so
        memory stays at one chunk of forecasts; errors come from `forecast.scoring.score`, as everywhere
        else. Cells masked in a window (a channel not fully valid there) count in no score.
    combine(parts) -> FleetTest. Devices are numbered in the order (position in its part, part): the
        whole fleet's order when part r holds every world-th device from the r-th (load_fleet's share),
        and always one fixed order for the same data and number of processes.
    FleetTest.metrics: `test/*` and `baseline/*` (last value) under today's names, over every valid
        cell of the fleet, plus `test/series_mse_scaled_p50` and `_p90` across devices.
    FleetTest.by_series: one row per device with test windows: id column(s), windows, mae, rmse,
        mse_scaled, mae_scaled, baseline_mse_scaled (evaluation/test_by_series.parquet).
    FleetTest.by_step; FleetTest.by_window (origin: the window's row in the fleet's stacked array,
        its devices in the order above, unique per window and the same across runs on the same data;
        timestamp; series: device number; the four scores), None above 2M windows (not logged).
    FleetTest.ids, mean, std, static: every device's id(s), scaler [D, C] and static values, for the saved
        model (`describe`); report: the ingestion report of every device; windows: windows per split.
    forecast_split(forecaster, data, split) -> TestForecasts of every window of a split at once
        (series [N], std [N, 1, T], actual NaN where masked): for holdouts and comparisons.
    log_fleet_evaluation(tmp, data, test, title): logs evaluation/test_by_series.parquet,
        test_by_step.parquet, test_by_window.parquet (up to 2M windows), example_window.parquet (as a
        single series has it, plus the device's id column(s)), data_by_series.parquet
        (the ingestion table) and plots/worst_series.png (the ten devices with the largest scaled MSE).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from forecast import fleet_share, scoring  # noqa: E402
from forecast.errors import JobFailed  # noqa: E402
from forecast.evaluate import TestForecasts  # noqa: E402
from forecast.fleet import FleetReport  # noqa: E402
from forecast.fleet_windows import wall_clock  # noqa: E402
from forecast.forecaster import Forecaster  # noqa: E402
from forecast.windows import Scaler  # noqa: E402

_SCORES = ("mse_scaled", "mae_scaled", "mae", "rmse")
_MAX_WINDOW_ROWS = 2_000_000
_WORST = 10  # devices in plots/worst_series.png
_EXAMPLES = 2  # devices in the served model's input example


@dataclass
class FleetPart:
    """One process's devices on the test span, all that it sends to rank zero (see the module docstring)."""

    ids: pd.DataFrame  # [D] id column(s)
    mean: np.ndarray  # [D, C] each device's scaler, fitted on its training span
    std: np.ndarray  # [D, C]
    length: np.ndarray  # [D] rows of each device's grid
    windows: np.ndarray  # [D] test windows
    cells: np.ndarray  # [D] valid cells of those windows
    sums: dict[str, np.ndarray]  # "test/<score>" | "baseline/<score>" -> [D] sums over valid cells (rmse: squared errors)
    step_sums: dict[str, np.ndarray]  # score -> [H] sums over valid cells, test forecasts
    step_cells: np.ndarray  # [H] valid cells per horizon step
    splits: dict[str, int]  # windows per split
    report: FleetReport  # the ingestion report, its table cut to the rows this process knows in full (`_vouched`)
    by_window: pd.DataFrame | None  # offset (the window's row within its device), timestamp, series, scores; None: not gathered
    worst: dict[int, tuple]  # device -> (origins [n] timestamps, actual [n, H], forecast [n, H]): first target, windows H apart
    inputs: dict[int, pd.DataFrame]  # device -> its last test window's input (the served model's example), last devices only
    window: tuple[int, pd.DataFrame]  # (device, example window) of the last test window


@dataclass
class FleetTest:
    """Scores of every test window of a fleet, and what the saved model needs of every device (see the module docstring)."""

    metrics: dict[str, float]
    by_series: pd.DataFrame
    by_step: pd.DataFrame
    by_window: pd.DataFrame | None
    devices: np.ndarray  # device number of each row of by_series
    ids: pd.DataFrame  # [D] every device's id column(s)
    mean: np.ndarray  # [D, C]
    std: np.ndarray  # [D, C]
    report: FleetReport
    windows: dict[str, int]  # windows per split, over every device
    worst: list[tuple]  # (device, origins, actual, forecast) of the devices with the largest scaled MSE, worst first
    example_input: pd.DataFrame  # the served model's input example (`_last_inputs`)
    example_window: pd.DataFrame  # the last test window of the last device

    def describe(self, forecaster: Forecaster) -> None:
        """Give the model every device's scaler and id; its `scaler` becomes the per-column median of the devices'."""
        forecaster.scaler = Scaler(np.median(self.mean, axis=0), np.median(self.std, axis=0))
        forecaster.series_mean, forecaster.series_std = self.mean, self.std
        forecaster.series_ids = list(self.ids.itertuples(index=False, name=None))


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


def fleet_test(forecaster: Forecaster, data) -> FleetTest | None:
    """Every device's test windows scored, each process its own devices; the combination on rank zero, None on the other ranks."""
    by_window = fleet_share.total(len(data.datasets["test"])) <= _MAX_WINDOW_ROWS  # the same on every process
    try:
        part = score_part(forecaster, data, by_window)
    except Exception as error:  # still gathered, so that rank zero fails at once instead of waiting for this part
        fleet_share.gather(f"{type(error).__name__}: {error}")
        raise
    parts = fleet_share.gather(part)
    if parts is None:
        return None
    failed = [f"rank {rank}: {p}" for rank, p in enumerate(parts) if isinstance(p, str)]
    if failed:
        raise JobFailed("testing the fleet failed on another process; nothing was logged as a model\n" + "\n".join(failed))
    return combine(parts)


def score_part(forecaster: Forecaster, data, by_window: bool = True, chunk: int = 65_536) -> FleetPart:
    """This process's devices on the test span (see the module docstring); by_window: keep every window's scores."""
    dataset, fleet, t = data.datasets["test"], data.fleet, forecaster.target_index
    n, devices = len(dataset), len(fleet)
    sums = {f"{who}/{k}": np.zeros(devices) for who in ("test", "baseline") for k in _SCORES}
    cells, windows = np.zeros(devices), np.zeros(devices, np.int64)
    step_sums, step_cells = {k: np.zeros(data.horizon) for k in _SCORES}, np.zeros(data.horizon)
    per_window = {k: np.empty(n if by_window else 0, np.float32) for k in _SCORES}
    series = np.empty(n, np.int64)
    for start in range(0, n, chunk):
        indices = np.arange(start, min(start + chunk, n))
        raw, actual, scaler, s = device_windows(forecaster, data, indices)
        pred = forecaster.forecast(raw, scaler=scaler, **network_inputs(forecaster, data, indices, s))  # [n, H, T]
        last = scoring.last_value(raw, t, data.horizon)  # [n, H, T]
        valid = ~np.isnan(actual)  # [n, H, T]
        actual0 = np.where(valid, actual, 0.0)
        std = scaler.std[..., t]  # [n, 1, T]
        count = valid.sum(axis=(1, 2))  # [n] valid cells per window
        series[indices] = s
        windows += np.bincount(s, minlength=devices)
        cells += np.bincount(s, weights=count, minlength=devices)
        for who, forecast in (("test", pred), ("baseline", last)):
            scores = _cell_sums(np.where(valid, forecast, 0.0), actual0, std, (1, 2))  # [n] sums over a window's cells
            for k in _SCORES:
                sums[f"{who}/{k}"] += np.bincount(s, weights=scores[k], minlength=devices)
                if who == "test" and by_window:
                    mean = scores[k] / np.maximum(count, 1)
                    per_window[k][indices] = np.sqrt(mean) if k == "rmse" else mean
        by_step = _cell_sums(np.where(valid, pred, 0.0), actual0, std, (0, 2))  # [H]
        for k in _SCORES:
            step_sums[k] += by_step[k]
        step_cells += valid.sum(axis=(0, 2))
    stamps = _timestamps(fleet, dataset.origins, series)  # [N] each window's first forecast step
    table = None
    if by_window:
        table = pd.DataFrame({"offset": dataset.origins - fleet.start[series], "timestamp": stamps, "series": series, **per_window})
    mse = sums["test/mse_scaled"] / np.maximum(cells, 1)  # [D]
    return FleetPart(
        ids=fleet.ids,
        mean=data.mean,
        std=data.std,
        length=fleet.length,
        windows=windows,
        cells=cells,
        sums=sums,
        step_sums=step_sums,
        step_cells=step_cells,
        splits=dict(data.windows),
        report=FleetReport(fleet.report.data, _vouched(fleet.report, fleet.ids), fleet.report.id_columns),
        by_window=table,
        worst=_worst_series(forecaster, data, series, stamps, np.where(windows > 0, mse, -np.inf)),
        inputs=_last_inputs(forecaster, data, series, stamps),
        window=_last_window(forecaster, data, series, stamps),
    )


def _cell_sums(pred: np.ndarray, actual: np.ndarray, std: np.ndarray, axis) -> dict[str, np.ndarray]:
    """scoring.score's errors summed (not averaged) over `axis`; rmse gives the sum of squared errors in data units."""
    cells = np.prod([pred.shape[a] for a in axis])
    scores = scoring.score(pred, actual, std, axis=axis)
    return {k: (v**2 if k == "rmse" else v) * cells for k, v in scores.items()}


def _timestamps(fleet, origins: np.ndarray, series: np.ndarray) -> pd.DatetimeIndex:
    """[N] the timestamp of each window's first forecast step (origins: rows of fleet.values; series: their devices)."""
    stamps = fleet.first[series] + (origins - fleet.start[series]) * fleet.step  # [N] ns
    when = pd.to_datetime(stamps, utc=fleet.tz is not None)
    return when.tz_convert(fleet.tz) if fleet.tz is not None else when


def _vouched(report: FleetReport, ids: pd.DataFrame) -> pd.DataFrame:
    """The ingestion table's rows this process knows in full: its own devices' (a share cleans only those) and those left out."""
    table = report.devices
    mine = pd.MultiIndex.from_frame(table[list(ids.columns)]).isin(pd.MultiIndex.from_frame(ids))
    return table[mine | (table["status"] != "kept").to_numpy()]


def _worst_series(forecaster: Forecaster, data, series, stamps, mse: np.ndarray, count: int = _WORST) -> dict[int, tuple]:
    """The `count` devices with the largest scaled MSE (-inf: no test window): first target's actual values and back-to-back forecasts."""
    worst = np.argsort(-mse, kind="stable")[: min(count, int(np.isfinite(mse).sum()))]
    out = {}
    for d in worst:
        mine = np.flatnonzero(series == d)[:: data.horizon]  # windows H apart: no overlap
        raw, actual, scaler, s = device_windows(forecaster, data, mine)
        pred = forecaster.forecast(raw, scaler=scaler, **network_inputs(forecaster, data, mine, s))
        out[int(d)] = (stamps[mine], actual[:, :, 0], pred[:, :, 0])
    return out


def _last_inputs(forecaster: Forecaster, data, series, stamps, devices: int = _EXAMPLES) -> dict[int, pd.DataFrame]:
    """The last test window's input of the last `devices` devices with test windows (each device's last L readings before its
    origin, data units), in long form: id column(s), static column(s) the model reads, timestamp, inputs."""
    last = np.unique(series[::-1], return_index=True)[1]  # per device: its last window, counted from the end
    chosen = np.sort(len(series) - 1 - last)[-devices:]  # [n] indices of the last windows of the last devices
    raw, _, _, s = device_windows(forecaster, data, chosen)  # [n, L, C]
    step = pd.Timedelta(int(data.fleet.step))
    out = {}
    for j, at in enumerate(chosen):
        part = pd.DataFrame(raw[j], columns=data.inputs)
        part.insert(0, "timestamp", pd.date_range(end=stamps[at] - step, periods=data.lookback, freq=step))
        for k, name in enumerate(data.series_columns):
            part.insert(k, name, data.fleet.ids[name].iloc[s[j]])
        for name in forecaster.static_columns:  # a model with static columns reads them from the request
            part.insert(len(data.series_columns), name, data.fleet.static[name].iloc[s[j]])
        out[int(s[j])] = part
    return out


def _last_window(forecaster: Forecaster, data, series, stamps) -> tuple[int, pd.DataFrame]:
    """The last test window: its device, and a frame of its id column(s), timestamp, targets over L + H steps and
    `<target>:forecast` over the last H."""
    at = np.array([len(series) - 1])
    raw, actual, scaler, s = device_windows(forecaster, data, at)
    pred = forecaster.forecast(raw, scaler=scaler, **network_inputs(forecaster, data, at, s))
    step = pd.Timedelta(int(data.fleet.step))
    frame = pd.DataFrame({"timestamp": pd.date_range(stamps[-1] - data.lookback * step, periods=data.lookback + data.horizon, freq=step)})
    for name, value in data.fleet.ids.iloc[int(s[0])].items():
        frame[name] = value
    t = forecaster.target_index
    for k, name in enumerate(data.targets):
        frame[name] = np.concatenate([raw[0, :, t[k]], actual[0, :, k]])
        frame[f"{name}:forecast"] = np.concatenate([np.full(data.lookback, np.nan), pred[0, :, k]])
    return int(s[0]), frame


# ---- rank zero: the parts combined -------------------------------------------------------------


def combine(parts: list[FleetPart]) -> FleetTest:
    """The processes' parts (in rank order) -> the fleet's test, as one process holding every device scores it."""
    order, numbers = _numbering([len(p.ids) for p in parts])
    windows, cells, length = (np.concatenate([getattr(p, name) for p in parts])[order] for name in ("windows", "cells", "length"))
    sums = {key: np.concatenate([p.sums[key] for p in parts])[order] for key in parts[0].sums}
    ids = pd.concat([p.ids for p in parts], ignore_index=True).iloc[order].reset_index(drop=True)
    metrics = {key: _mean(key, values.sum() / cells.sum()) for key, values in sums.items()}
    seen = windows > 0
    by_series = ids[seen].reset_index(drop=True)
    by_series["windows"] = windows[seen]
    for k in ("mae", "rmse", "mse_scaled", "mae_scaled"):
        by_series[k] = _mean(k, sums[f"test/{k}"][seen] / cells[seen])
    by_series["baseline_mse_scaled"] = sums["baseline/mse_scaled"][seen] / cells[seen]
    metrics["test/series_mse_scaled_p50"] = float(np.percentile(by_series["mse_scaled"], 50))
    metrics["test/series_mse_scaled_p90"] = float(np.percentile(by_series["mse_scaled"], 90))
    step_cells = np.maximum(sum(p.step_cells for p in parts), 1)
    steps = pd.DataFrame({"step": np.arange(1, len(step_cells) + 1)})
    for k in _SCORES:
        steps[k] = _mean(k, sum(p.step_sums[k] for p in parts) / step_cells)
    worst = [(n[d], *series) for p, n in zip(parts, numbers) for d, series in p.worst.items()]
    mse = dict(zip(np.flatnonzero(seen), by_series["mse_scaled"]))
    worst = sorted(worst, key=lambda w: (-mse[w[0]], w[0]))[:_WORST]  # the worst of every process's worst
    inputs = sorted((n[d], frame) for p, n in zip(parts, numbers) for d, frame in p.inputs.items())[-_EXAMPLES:]
    return FleetTest(
        metrics=metrics,
        by_series=by_series,
        by_step=steps,
        by_window=_windows(parts, numbers, length) if all(p.by_window is not None for p in parts) else None,
        devices=np.flatnonzero(seen),
        ids=ids,
        mean=np.concatenate([p.mean for p in parts])[order],
        std=np.concatenate([p.std for p in parts])[order],
        report=combine_reports([p.report for p in parts]),
        windows={split: sum(p.splits[split] for p in parts) for split in parts[0].splits},
        worst=worst,
        example_input=pd.concat([frame for _, frame in inputs], ignore_index=True),
        example_window=max(((n[p.window[0]], p.window[1]) for p, n in zip(parts, numbers)), key=lambda w: w[0])[1],
    )


def _numbering(sizes: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Devices of the parts numbered in the order (position in its part, part): the concatenation's position of each
    number [D], and each part's numbers of its devices."""
    part = np.repeat(np.arange(len(sizes)), sizes)
    position = np.concatenate([np.arange(n) for n in sizes])
    order = np.lexsort((part, position))  # number -> position in the concatenation
    number = np.empty_like(order)
    number[order] = np.arange(len(order))
    return order, np.split(number, np.cumsum(sizes)[:-1])


def _mean(key: str, mean):
    """A mean of summed cells as its score: rmse is the root of the mean squared error."""
    return np.sqrt(mean) if key.endswith("rmse") else mean


def _windows(parts: list[FleetPart], numbers: list[np.ndarray], length: np.ndarray) -> pd.DataFrame:
    """Every part's per-window scores, origins renumbered as rows of the fleet's stacked array (a NaN row before each device)."""
    start = 1 + np.r_[0, np.cumsum(length + 1)[:-1]]  # [D] each device's first row
    frames = []
    for p, n in zip(parts, numbers):
        series = n[p.by_window["series"].to_numpy()]
        frame = p.by_window.drop(columns="offset").assign(series=series)
        frame.insert(0, "origin", start[series] + p.by_window["offset"].to_numpy())
        frames.append(frame)
    return pd.concat(frames, ignore_index=True).sort_values("origin", kind="stable", ignore_index=True)


def combine_reports(reports: list[FleetReport]) -> FleetReport:
    """The processes' ingestion reports (each with the rows it vouches for) -> the whole fleet's: one row per device (a share's
    own rows, then those left out, once) and the totals of its kept devices' cleaning summed over them."""
    if len(reports) == 1:
        return reports[0]
    columns = reports[0].id_columns
    table = pd.concat([r.devices for r in reports], ignore_index=True).drop_duplicates(columns, ignore_index=True)
    kept = table[table["status"] == "kept"]
    data = dataclasses.replace(reports[0].data)  # what every process read alike: files, rows read, missing codes, ...
    data.values_interpolated, data.values_masked, data.stuck_values = (int(kept[c].sum()) for c in ("interpolated", "masked", "stuck"))
    data.rows = data.grid_steps = int(kept["rows"].sum())
    data.start, data.end = str(kept["first"].min()), str(kept["last"].max())
    return FleetReport(data, table, columns)


# ---- rank zero: what is logged -------------------------------------------------------------------


def log_fleet_evaluation(tmp: Path, data, test: FleetTest, title: str) -> None:
    """The per-device, per-step and per-window tables, the ingestion table and the plot of the worst devices."""
    tables = {"test_by_series.parquet": test.by_series, "test_by_step.parquet": test.by_step}
    tables["example_window.parquet"] = test.example_window
    if test.by_window is not None:
        tables["test_by_window.parquet"] = test.by_window
    tables["data_by_series.parquet"] = test.report.devices.astype({c: str for c in ("first", "last")})
    for name, frame in tables.items():
        frame.to_parquet(tmp / name, index=False)
        mlflow.log_artifact(str(tmp / name), "evaluation")
    mlflow.log_artifact(str(plot_worst(data, test, title, tmp / "worst_series.png")), "plots")


def plot_worst(data, test: FleetTest, title: str, path: Path) -> Path:
    """The devices with the largest scaled MSE: actual values of the first target over the test span and back-to-back forecasts."""
    fig, axes = plt.subplots(len(test.worst), 1, figsize=(11, 1.9 * len(test.worst)), squeeze=False)
    step = pd.Timedelta(int(data.fleet.step))
    for ax, (d, origins, actual, pred) in zip(axes[:, 0], test.worst):
        row = test.by_series.iloc[int(np.searchsorted(test.devices, d))]
        for j, origin in enumerate(origins):
            stamps = pd.date_range(origin, periods=data.horizon, freq=step)
            ax.plot(stamps, actual[j], color="0.35", lw=0.9, label="actual" if j == 0 else None)
            ax.plot(stamps, pred[j], color="tab:orange", lw=1.0, label="forecast" if j == 0 else None)
        name = "/".join(str(row[c]) for c in data.series_columns)
        ax.set_ylabel(name, fontsize=8)
        ax.set_title(f"{name}: scaled MSE {row['mse_scaled']:.3f} over {row['windows']:,} windows", fontsize=8, loc="left")
    axes[0, 0].legend(loc="upper right", fontsize=7)
    fig.suptitle(f"{title}: the {len(test.worst)} devices with the largest test error ({data.targets[0]})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
