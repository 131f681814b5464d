"""Quantile forecasts: the levels, the pinball loss, quantiles that never cross, and their calibration.

With `model.quantiles` set (e.g. [0.1, 0.5, 0.9]) a trainable network (recurrent, linear) emits one
forecast per level, [B, H, T, Q], trained on the pinball loss of every level; the median (0.5, always
among the levels) is the point forecast. Quantiles never cross by construction: the network emits the
median and positive increments (softplus) outwards from it, summed (`monotone`). The last-value and
seasonal-naive baselines keep their point forecast and get their levels from validation residuals.

Calibration (`calibrate`) is split-conformal, one-sided per level, per horizon step and per target,
on the validation windows: for level q it shifts the forecast quantile by the empirical q-quantile of
the validation scores y - q_hat (finite-sample rank ceil((n + 1) q) above the median, floor((n + 1) q)
below). Under exchangeability of validation and test windows this gives P(y <= calibrated q) >= q
for q > 0.5 (<= q for q < 0.5), so each central interval [q, 1 - q] covers with probability at
least 1 - 2q (Romano, Patterson and Candes, "Conformalized Quantile Regression", 2019, asymmetric
form; Vovk et al. for split conformal). Windows of a time series are not exchangeable (they overlap
and the series drifts), so on a real series the guarantee is approximate: docs/quantiles.md shows how
close test coverage comes. The median is not shifted, so the point forecast is the network's own.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from forecast.errors import InputError

MEDIAN = 0.5


def levels(quantiles) -> list[float]:
    """The `model.quantiles` setting as sorted, distinct levels in (0, 1) with 0.5 among them; [] for a point model.

    Raises InputError naming the setting for anything else.
    """
    if quantiles is None:
        return []
    try:
        values = [float(q) for q in quantiles]
    except (TypeError, ValueError):
        raise InputError(f"model.quantiles={quantiles!r}: give a list of levels in (0, 1), e.g. model.quantiles=[0.1,0.5,0.9]") from None
    if not values:
        return []
    bad = [q for q in values if not 0 < q < 1]
    if bad or any(isinstance(q, bool) for q in quantiles):
        raise InputError(f"model.quantiles={list(quantiles)}: every level must lie strictly between 0 and 1 (e.g. [0.1,0.5,0.9])")
    return sorted(set(values) | {MEDIAN})


def median_index(levels: list[float]) -> int:
    return levels.index(MEDIAN)


def label(q: float) -> str:
    """A level as column names print it: 0.1 -> '0.1', 0.05 -> '0.05' (`power_kw:q0.1`)."""
    return f"{q:g}"


def intervals(levels: list[float]) -> list[tuple[int, int, str]]:
    """The central intervals the levels hold: (lower index, upper index, percent) for each pair q, 1 - q (q < 0.5).

    The percent names the metric: 0.1 and 0.9 -> '80' (`test/coverage_80`), 0.025 and 0.975 -> '95'.
    """
    out = []
    for i, q in enumerate(levels):
        if q < MEDIAN:
            j = next((j for j, p in enumerate(levels) if math.isclose(p, 1 - q, abs_tol=1e-9)), None)
            if j is not None:
                out.append((i, j, f"{round((1 - 2 * q) * 100, 6):g}"))
    return out


def weights(levels: list[float]) -> np.ndarray:
    """Each level's share of (0, 1) [Q]: the cell from the midpoint with the level below (or 0) to the
    midpoint with the level above (or 1). The weights of the CRPS's midpoint rule; they sum to 1."""
    q = np.asarray(levels, dtype=np.float64)
    bounds = np.concatenate([[0.0], (q[1:] + q[:-1]) / 2, [1.0]])
    return np.diff(bounds)


# ---- the network side (torch) ------------------------------------------------------------------------


def monotone(raw: torch.Tensor, median: int) -> torch.Tensor:
    """Non-crossing quantiles [..., Q] from raw outputs [..., Q]: the median, then positive steps outwards.

    raw[..., median] is the median; every other raw value is turned into a positive increment
    (softplus) and summed away from the median, so level k + 1 is never below level k.
    """
    mid = raw[..., median : median + 1]  # [..., 1]
    up = torch.cumsum(nn.functional.softplus(raw[..., median + 1 :]), dim=-1)  # [..., Q - m - 1]
    down = torch.cumsum(nn.functional.softplus(raw[..., :median].flip(-1)), dim=-1).flip(-1)  # [..., m]
    return torch.cat([mid - down, mid, mid + up], dim=-1)  # [..., Q]


class PinballLoss(nn.Module):
    """Mean pinball (quantile) loss over every level, step and target, on standardised values.

    Args:
        levels: the quantile levels, in the order of the forecast's last axis.
        reduction: "mean" (one number) or "none" (the mean over levels of each cell, [B, H, T]: what a
            masked fleet loss weighs).
    """

    def __init__(self, levels: list[float], reduction: str = "mean"):
        super().__init__()
        self.register_buffer("levels", torch.as_tensor(levels, dtype=torch.float32), persistent=False)
        self.reduction = reduction

    def forward(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        diff = y.unsqueeze(-1) - pred  # [B, H, T, Q]
        cells = torch.maximum(self.levels * diff, (self.levels - 1) * diff).mean(-1)  # [B, H, T]
        return cells if self.reduction == "none" else cells.mean()


# ---- scoring and calibration (numpy) -----------------------------------------------------------------


def pinball(quantiles: np.ndarray, levels, actual: np.ndarray) -> np.ndarray:
    """Pinball loss of each quantile [..., Q] against actual [...]: max(q (y - f), (q - 1)(y - f))."""
    q = np.asarray(levels, dtype=np.float64)
    diff = actual[..., None] - quantiles  # [..., Q]
    return np.maximum(q * diff, (q - 1) * diff)


def conformal_rank(n: int, q: float) -> int:
    """The 1-based order statistic of n scores that calibrates level q (split conformal, finite sample).

    Above the median ceil((n + 1) q), capped at n; below it floor((n + 1) q), at least 1.
    """
    if q > MEDIAN:
        return min(math.ceil((n + 1) * q - 1e-9), n)
    return max(math.floor((n + 1) * q + 1e-9), 1)


def windows_needed(levels: list[float]) -> int:
    """The fewest calibration windows whose order statistics reach every level: n + 1 >= 1 / min(q, 1 - q).

    With fewer, the outermost levels fall back to the extreme scores (`conformal_rank` is capped), and
    the guarantee no longer holds for them: 39 windows for 0.025 and 0.975, 9 for 0.1 and 0.9.
    """
    tails = [min(q, 1 - q) for q in levels if q != MEDIAN]
    return math.ceil(1 / min(tails) - 1 - 1e-9) if tails else 1


def calibrate(quantiles: np.ndarray, levels: list[float], actual: np.ndarray) -> np.ndarray:
    """Offsets [H, T, Q] that calibrate each level, per horizon step and target, from validation windows.

    quantiles: the uncalibrated forecasts [N, H, T, Q] of the validation windows; actual [N, H, T],
    in the same (standardised) units. The offset of level q is the order statistic
    `conformal_rank(n, q)` of the scores y - q_hat; the median's offset is 0.
    """
    n = len(quantiles)
    if n < 1:
        raise InputError("no validation window to calibrate the quantiles on; lower data.lookback or raise data.val_fraction")
    scores = np.sort(actual[..., None] - quantiles, axis=0)  # [N, H, T, Q]
    offsets = np.zeros(quantiles.shape[1:])  # [H, T, Q]
    for k, q in enumerate(levels):
        if q != MEDIAN:
            offsets[..., k] = scores[conformal_rank(n, q) - 1, ..., k]
    return offsets


def apply(quantiles: np.ndarray, offsets: np.ndarray | None, levels: list[float]) -> np.ndarray:
    """Calibrated quantiles [N, H, T, Q]: shifted by the offsets [H, T, Q], then kept from crossing.

    The median is never shifted (it is the point forecast). Where a shifted level would cross its
    neighbour towards the median, it is moved onto it: each level below the median is at most the
    next one up, each level above at least the next one down. This only acts where levels would cross.
    """
    shifted = quantiles if offsets is None else quantiles + offsets
    m = levels.index(MEDIAN)
    out = shifted.copy()
    out[..., : m + 1] = np.minimum.accumulate(shifted[..., m::-1], axis=-1)[..., ::-1]  # downwards from the median
    out[..., m:] = np.maximum.accumulate(shifted[..., m:], axis=-1)  # upwards from the median
    return out
