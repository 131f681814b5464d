"""Retrain on a fleet: champion and challengers scored on every device's holdout windows, and who loses where.

`python -m forecast.retrain data=fleet ...` uses `FleetHoldout` in place of `promotion.Holdout`:

- the holdout is the fleet data module's test span (the same timestamps cut every device), every
  device's windows (`fleet_evaluate.device_windows`: raw readings in data units, masked cells NaN);
- every contender forecasts them through its own Forecaster: a device it saw in training with
  that device's training-span scaler, one it never saw (a device installed since the champion
  was trained) scaled on the window's own readings, as the served model does (cold start);
- errors are standardised by this data's per-device scaler, the same for every contender, and
  summed over the valid cells only (`fleet_evaluate._cell_sums`, which calls `scoring.score`):
  the fleet-wide scores feed the unchanged `promotion.decide`, the per-device ones `by_series`;
- `lost_badly` then names the devices where a challenger that wins on average loses badly to the
  champion (or, with no champion scored, to repeating the last value): its per-device metric above
  `per_device_loss_ratio` x the reference's. The retrain run records them (`per_device/` artifacts,
  `<challenger>/devices_lost_badly` metrics, the `devices_lost_badly` tag); the decision itself
  stays the fleet-wide one.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd

from forecast import fleet_evaluate
from forecast.errors import InputError
from forecast.promotion import Contender, show
from forecast.windows import Scaler

SCORES = ("mse_scaled", "mae_scaled", "mae", "rmse")
CHUNK = 65_536  # windows forecast at a time


def fits(data, contender: Contender) -> str | None:
    """Why the contender cannot forecast this fleet's holdout (None: it can)."""
    m = contender.model
    if m is None:
        return contender.unloadable
    if not m.series_columns:
        return "it forecasts one series, not a fleet"
    missing = [c for c in m.inputs if c not in data.inputs]
    if missing:
        return f"it reads column(s) {', '.join(missing)} that this data lacks"
    if pd.Timedelta(m.freq) != pd.Timedelta(data.report.data.freq):
        return f"it was trained on a reading every {m.freq}; this data has one every {data.report.data.freq}"
    if m.horizon != data.horizon or list(m.targets) != data.targets:
        return (
            f"it forecasts {m.horizon} steps of {', '.join(m.targets)}; this data gives {data.horizon} steps of {', '.join(data.targets)}"
        )
    if m.lookback > data.lookback:
        return f"its lookback {m.lookback} is longer than data.lookback={data.lookback}; retrain with data.lookback={m.lookback}"
    unread = [c for c in m.static_columns if data.fleet.static is None or c not in data.fleet.static.columns]
    if "static" in m.uses and unread:
        return f"it reads the static column(s) {', '.join(unread)}; add them to data.static_columns"
    return None


class FleetHoldout:
    """The fleet's test span, every device's windows, the same for every contender; per-device scores in `by_series`."""

    def __init__(self, data, metric: str):
        self.data, self.metric = data, metric
        self.ids = list(data.series_columns)
        self.columns = SimpleNamespace(target_index=data.target_index)  # what device_windows reads of a forecaster
        dataset = data.datasets["test"]
        self.origins = dataset.origins  # [N]
        if len(self.origins) == 0:
            raise InputError(f"the holdout span of {data.path} holds no window on any device; wait for more data or lower data.lookback")
        self.series = dataset.series_of(dataset.origin_rows).numpy()  # [N] device of each window
        self.windows = np.bincount(self.series, minlength=len(data.fleet))  # [D]
        self.devices = np.flatnonzero(self.windows)  # devices with holdout windows
        self.by_series = data.fleet.ids.iloc[self.devices].reset_index(drop=True)
        self.by_series["windows"] = self.windows[self.devices]
        print(f"holdout: {len(self.origins):,} windows of {len(self.devices):,} devices (the test span of every device)")

    def _scores(self, role: str, forecast) -> dict[str, float]:
        """Fleet-wide scores of `forecast(raw, series, indices) -> [n, H, T]` over every valid cell (indices: the windows' positions in
        the test split); its per-device metric into by_series."""
        devices, t = len(self.data.fleet), self.data.target_index
        sums, cells = {k: np.zeros(devices) for k in SCORES}, np.zeros(devices)
        for start in range(0, len(self.origins), CHUNK):
            indices = np.arange(start, min(start + CHUNK, len(self.origins)))
            raw, actual, scaler, s = fleet_evaluate.device_windows(self.columns, self.data, indices)  # data units; scaler: this data's
            pred = forecast(raw, s, indices)  # [n, H, T]
            valid = ~np.isnan(actual)
            scores = fleet_evaluate._cell_sums(np.where(valid, pred, 0.0), np.where(valid, actual, 0.0), scaler.std[..., t], (1, 2))
            for k in SCORES:
                sums[k] += np.bincount(s, weights=scores[k], minlength=devices)
            cells += np.bincount(s, weights=valid.sum(axis=(1, 2)), minlength=devices)
        total = {k: v.sum() / cells.sum() for k, v in sums.items()}
        total["rmse"] = math.sqrt(total["rmse"])
        total["crps"] = total["mae_scaled"]  # the CRPS of a point forecast (a fleet model has no quantiles yet)
        metric = "mae_scaled" if self.metric == "crps" else self.metric
        per_device = sums[metric][self.devices] / cells[self.devices]
        self.by_series[role] = np.sqrt(per_device) if self.metric == "rmse" else per_device
        return {k: float(v) for k, v in total.items()}

    def baseline(self) -> dict[str, float]:
        """Repeating each target's last value on the same windows."""
        t, h = self.data.target_index, self.data.horizon
        scores = self._scores("baseline", lambda raw, s, indices: np.broadcast_to(raw[:, -1:, t], (len(raw), h, len(t))))
        show("baseline", "repeat the last value", scores)
        return scores

    def score(self, role: str, contender: Contender) -> dict[str, float] | str:
        """The contender's errors on every device's holdout windows; why not, when it cannot be scored."""
        why = fits(self.data, contender)
        if why is not None:
            print(f"  {role:<10} {contender.label} ({contender.architecture}): cannot be scored: {why}", flush=True)
            return why
        m = contender.model
        known = m.series_index(list(self.data.fleet.ids.itertuples(index=False, name=None)))  # [D] its device numbers, -1: unseen
        columns = [self.data.inputs.index(c) for c in m.inputs]
        embedded = getattr(m.net, "series", None) is not None

        def forecast(raw: np.ndarray, s: np.ndarray, indices: np.ndarray) -> np.ndarray:
            x = raw[:, -m.lookback :, columns]  # [n, L_m, C_m] its own lookback and columns
            index = known[s]  # [n]
            inputs = fleet_evaluate.network_inputs(m, self.data, indices, s) | {"series": index if embedded else None}  # + calendar, static
            return m.forecast(x, scaler=own_scaler(m, index, x), **inputs)

        scores = self._scores(role, forecast)
        unseen = int((known[self.devices] < 0).sum())
        show(role, f"{contender.label} ({contender.architecture})" + (f", {unseen:,} devices unseen: cold start" if unseen else ""), scores)
        return scores


def own_scaler(m, index: np.ndarray, x: np.ndarray) -> Scaler:
    """[n, 1, C] each window's scaler as the served model uses it: a seen device's training scaler, else the window's own."""
    with np.errstate(all="ignore"):
        mean, std = np.nanmean(x, axis=1, keepdims=True), np.nanstd(x, axis=1, keepdims=True)  # [n, 1, C] cold start
    mean = np.where(np.isfinite(mean), mean, m.scaler.mean)
    std = np.where(np.isfinite(std) & (std > 0), std, np.where(np.isfinite(std), 1.0, m.scaler.std))
    seen = index >= 0
    if m.series_mean is not None and seen.any():
        mean[seen, 0], std[seen, 0] = m.series_mean[index[seen]], m.series_std[index[seen]]
    return Scaler(mean, std)


def lost_badly(by_series: pd.DataFrame, ids: list[str], scores: dict[str, float], reference: str, ratio: float) -> dict[str, pd.DataFrame]:
    """Per challenger that beats `reference` on average: the devices where it loses badly to it (a pure function).

    by_series: one row per device of the holdout: its id column(s) `ids`, then each contender's
    per-device metric in a column named for it (`baseline`, `champion`, the challengers). scores: each
    challenger's metric over the whole holdout, and the reference's under its own name. A device is
    lost badly when the challenger's metric there exceeds `ratio` x the reference's. Returns, for
    each challenger better than the reference on average, those devices worst first (columns: ids,
    the challenger's and the reference's metric, `ratio`); a challenger no better on average is not
    checked (it does not win).
    """
    out = {}
    for name, score in scores.items():
        if name == reference or name not in by_series or not (math.isfinite(score) and score < scores[reference]):
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            times = by_series[name] / by_series[reference]  # [devices]
        bad = by_series[name] > ratio * by_series[reference]
        out[name] = (
            by_series.loc[bad, [*ids, name, reference]].assign(ratio=times[bad]).sort_values("ratio", ascending=False, ignore_index=True)
        )
    return out


def report_losses(holdout: FleetHoldout, scores: dict, metric: str, ratio: float) -> dict[str, pd.DataFrame]:
    """Print and record on the active (retrain) run the devices each winning challenger loses badly; returns them.

    The reference is the champion when it was scored, else repeating the last value.
    """
    reference = "champion" if isinstance(scores.get("champion"), dict) else "baseline"
    values = {k: s[metric] for k, s in scores.items() if isinstance(s, dict)}
    lost = lost_badly(holdout.by_series, holdout.ids, values, reference, ratio)
    n = len(holdout.by_series)
    shown = []
    for name, rows in lost.items():
        worst = ", ".join(f"{'/'.join(str(r[c]) for c in holdout.ids)} {r['ratio']:.1f}x" for _, r in rows.head(5).iterrows())
        line = f"{name}: {len(rows):,} of {n:,} devices" + (f" ({worst}{', ...' if len(rows) > 5 else ''})" if len(rows) else "")
        print(f"devices lost badly against the {reference} ({metric} above {ratio:g}x): {line}")
        shown.append(line)
        mlflow.log_metric(f"{name}/devices_lost_badly", len(rows))
    mlflow.log_param("per_device_loss_ratio", ratio)
    mlflow.set_tag("devices_lost_badly", ("; ".join(shown) or "no challenger beats the " + reference + " on average")[:5000])
    mlflow.log_table(holdout.by_series, "per_device/scores.json")
    for name, rows in lost.items():
        mlflow.log_table(rows, f"per_device/lost_badly_{name}.json")
    return lost
