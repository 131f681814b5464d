"""How every forecast is scored: the same errors for training's test span, retrain's holdout and the benchmarks.

Errors come twice: on standardised values (`*_scaled`, as published benchmarks report them:
the difference divided by the training span's std of the target) and in the data's own units.
"""

from __future__ import annotations

import numpy as np


def score(pred: np.ndarray, actual: np.ndarray, std: np.ndarray, axis: int | tuple[int, ...] | None = None) -> dict:
    """MSE and MAE on standardised values, MAE and RMSE in data units, averaged over `axis`.

    pred and actual are [N, H, T] in data units; std is the targets' training-span std ([T], or any
    shape that broadcasts). axis=None gives floats; axis=(0, 2) one value per horizon step,
    axis=(1, 2) one per window.
    """
    diff = pred - actual  # [N, H, T] data units
    scaled = diff / std  # [N, H, T] standardised
    return {
        "mse_scaled": _mean(scaled**2, axis),
        "mae_scaled": _mean(np.abs(scaled), axis),
        "mae": _mean(np.abs(diff), axis),
        "rmse": _mean(diff**2, axis) ** 0.5,
    }


def last_value(inputs: np.ndarray, target_index: list[int], horizon: int) -> np.ndarray:
    """The baseline every score is shown beside: each target's last input value [N, H, T], repeated (a view)."""
    last = inputs[:, -1:, target_index]  # [N, 1, T]
    return np.broadcast_to(last, (len(inputs), horizon, len(target_index)))


def _mean(values: np.ndarray, axis):
    out = values.mean(axis=axis)
    return float(out) if axis is None else out
