"""Fleet windows: one split in time for every device, a scaler per device, and windows that are views of one array.

Interface:

    split_times(fleet, val_fraction, test_fraction, cuts) -> {"train"|"val"|"test": (start_ns, end_ns)}
        The same timestamps cut every device: `cuts` = [train_end, val_end] or [train_end, val_end,
        test_end] (timestamps), else fractions of the fleet's overall time range (first reading of
        any device to the last of any), the test span last.
    fit_scalers(fleet, train_end, lookback) -> (mean [D, C], std [D, C])
        Each device's, each column's mean and std over its rows before train_end. A device (or one
        of its sensors) with fewer than two readings there, e.g. installed after the cut, is
        scaled on its first `lookback` rows that hold readings: the history a cold-start forecast has too.
    wall_clock(first, start, step, tz, rows, devices) -> [B] int64 ns, the local time of rows (calendar features)
    scale(fleet, mean, std): standardises fleet.values in place (float32; NaN stays NaN).
    fleet_origins(fleet, span, lookback, horizon, channels, rule) -> [N] int64 rows of fleet.values
        Forecast origins t of every device whose target rows [t, t+H) lie in the span and whose rows
        [t-L, t+H) stay on the device and are fully valid for at least one of `channels`
        (rule="any": channel independence) or for all of them (rule="all": channel mixing).
    FleetWindows(series [R, C] tensor, origins, lookback, horizon, target_index, start, clock=None, static=None)
        A WindowDataset whose batches are (x [B, L, C], y [B, H, T], series [B] long), and with
        calendar or static inputs (x, y, series, extra): extra = {"origin": [B] int64 ns, the wall-clock
        time of each window's first forecast step (given `clock`), "static": [B, S] long, each
        window's device's static codes (given `static` [D, S])}. A channel
        that is not fully valid in a window has its inputs set to 0 (the standardised mean) and its
        targets to NaN, so the loss and the scores leave it out; under channel independence the
        other channels' forecasts do not depend on it (tests/test_fleet.py checks that).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

from forecast.errors import InputError
from forecast.fleet import Fleet
from forecast.windows import WindowDataset


def split_times(fleet: Fleet, val_fraction: float, test_fraction: float, cuts: list | None) -> dict[str, tuple[int, int]]:
    """[start, end) in ns of the train, val and test targets, the same for every device."""
    begin, end = fleet.span  # the whole fleet's first reading, and just after its last
    if cuts is not None:
        stamps = [_stamp(value, fleet.tz) for value in cuts]
        if len(stamps) not in (2, 3) or not all(a < b for a, b in zip(stamps, stamps[1:])):
            raise InputError(
                f"data.cuts={list(cuts)} must be two or three increasing timestamps [train_end, val_end(, test_end)].\n"
                "Fix data.cuts, or set data.cuts=null to cut by data.val_fraction and data.test_fraction."
            )
        a, b, c = stamps[0], stamps[1], stamps[2] if len(stamps) == 3 else end
    else:
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise InputError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be in (0, 1) and sum below 1")
        c = end
        b = c - round((end - begin) * test_fraction)
        a = b - round((end - begin) * val_fraction)
    return {"train": (begin, a), "val": (a, b), "test": (b, c)}


def _stamp(value, tz: str | None) -> int:
    try:
        stamp = pd.Timestamp(str(value))
    except ValueError:
        raise InputError(f"data.cuts: {value!r} is not a timestamp.\nUse e.g. data.cuts=['2024-09-01','2024-11-01'].") from None
    if tz is not None:
        stamp = stamp.tz_localize(tz) if stamp.tz is None else stamp.tz_convert(tz)
    elif stamp.tz is not None:
        raise InputError(f"data.cuts: {value!r} has a UTC offset but the fleet's timestamps have none.\nWrite the cut without one.")
    return stamp.as_unit("ns").value


def fit_scalers(fleet: Fleet, train_end: int, lookback: int) -> tuple[np.ndarray, np.ndarray]:
    """Per device and column mean and std ([D, C] each, population std; 1 for a constant column)."""
    rows = fleet.rows_before(train_end)
    mean = np.zeros((len(fleet), len(fleet.columns)))
    std = np.ones((len(fleet), len(fleet.columns)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for d, (start, n, length) in enumerate(zip(fleet.start, rows, fleet.length)):
            span = fleet.values[start : start + n].astype(np.float64)  # [n, C]
            enough = np.count_nonzero(~np.isnan(span), axis=0) >= 2
            mean[d], std[d] = np.nanmean(span, axis=0), np.nanstd(span, axis=0)
            for c in np.flatnonzero(~enough):  # installed after the cut: its first lookback readings
                column = fleet.values[start : start + length, c]
                present = np.flatnonzero(~np.isnan(column))[:lookback]
                mean[d, c], std[d, c] = (np.mean(column[present]), np.std(column[present])) if present.size else (0.0, 1.0)
    return mean, np.where(std > 0, std, 1.0)


def scale(fleet: Fleet, mean: np.ndarray, std: np.ndarray) -> None:
    """fleet.values standardised in place, device by device."""
    for d, (start, length) in enumerate(zip(fleet.start, fleet.length)):
        rows = fleet.values[start : start + length]
        rows -= mean[d].astype(np.float32)
        rows /= std[d].astype(np.float32)


def fleet_origins(fleet: Fleet, span: tuple[int, int], lookback: int, horizon: int, channels: list[int], rule: str) -> np.ndarray:
    """Global forecast origins (rows of fleet.values) of every device's windows in the span, device after device."""
    low = np.maximum(fleet.rows_before(span[0]), lookback)  # [D] first local origin
    high = fleet.rows_before(span[1]) - horizon  # [D] last local origin
    counts = np.clip(high - low + 1, 0, None)
    offsets = np.r_[0, np.cumsum(counts)[:-1]]
    origins = np.repeat(fleet.start + low - offsets, counts) + np.arange(int(counts.sum()))  # [N]
    ok = np.zeros(len(origins), bool) if rule == "any" else np.ones(len(origins), bool)
    for c in channels:
        bad = np.concatenate([[0], np.cumsum(np.isnan(fleet.values[:, c]), dtype=np.int64)])  # invalid rows before each row
        clean = bad[origins + horizon] - bad[origins - lookback] == 0
        ok = ok | clean if rule == "any" else ok & clean
    return origins[ok]


def wall_clock(first: np.ndarray, start: np.ndarray, step: int, tz: str | None, rows: np.ndarray, devices: np.ndarray) -> np.ndarray:
    """[B] int64 ns: the wall-clock time (in the fleet's own time zone, if it has one) of rows of the stacked array of devices."""
    ns = first[devices] + (rows - start[devices]) * step  # [B] ns (UTC with a time zone)
    if tz is not None:
        ns = pd.DatetimeIndex(pd.to_datetime(ns, utc=True)).tz_convert(tz).tz_localize(None).asi8
    return np.asarray(ns, np.int64)


class FleetWindows(WindowDataset):
    """Windows of every device over one stacked [R, C] tensor; batches carry each window's device number."""

    def __init__(
        self,
        series: torch.Tensor,
        origins: np.ndarray,
        lookback: int,
        horizon: int,
        target_index: list[int],
        start: np.ndarray,
        clock: tuple[np.ndarray, int, str | None] | None = None,
        static: np.ndarray | None = None,
    ):
        """clock: (first [D] ns, step ns, tz) of the fleet, for each window's origin timestamp; static: [D, S] codes."""
        super().__init__(series, origins, lookback, horizon, target_index)
        self.start = torch.from_numpy(np.asarray(start, np.int64))  # [D] first row of each device
        self.clock = clock
        self.static = None if static is None else torch.from_numpy(np.asarray(static, np.int64))  # [D, S]

    def origin_times(self, origins: torch.Tensor, devices: torch.Tensor) -> torch.Tensor:
        """[B] int64 ns: wall-clock time of each window's first forecast step."""
        first, step, tz = self.clock
        return torch.from_numpy(wall_clock(first, self.start.numpy(), step, tz, origins.numpy(), devices.numpy()))

    def series_of(self, origins: torch.Tensor) -> torch.Tensor:
        """Device number of each origin."""
        return torch.searchsorted(self.start, origins, right=True) - 1

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        origins = self.origin_rows[indices]  # [B]
        w = self.windows[origins - self.lookback]  # [B, C, L+H]
        invalid = torch.isnan(w).any(dim=2)  # [B, C] channels not fully valid in the window
        x = w[:, :, : self.lookback].transpose(1, 2).masked_fill(invalid.unsqueeze(1), 0.0)  # [B, L, C], masked channels all 0
        y = w[:, self.target_index, self.lookback :].transpose(1, 2).clone()  # [B, H, T]
        y.masked_fill_(invalid[:, self.target_index].unsqueeze(1), float("nan"))  # masked channels: no loss, no score
        devices = self.series_of(origins)  # [B]
        if self.clock is None and self.static is None:
            return x.contiguous(), y.contiguous(), devices
        extra = {"origin": self.origin_times(origins, devices)} if self.clock is not None else {}  # [B]
        extra |= {"static": self.static[devices]} if self.static is not None else {}  # [B, S]
        return x.contiguous(), y.contiguous(), devices, extra

    def __getitem__(self, i: int):
        x, y, s, *extra = self.__getitems__([i])
        return (x[0], y[0], s[0], *({k: v[0] for k, v in e.items()} for e in extra))
