"""How every forecast is scored: the same errors for training's test span, retrain's holdout and the benchmarks.

Errors come twice: on standardised values (`*_scaled`, as published benchmarks report them:
the difference divided by the training span's std of the target) and in the data's own units.
"""

from __future__ import annotations

import numpy as np

from forecast import quantiles as q


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


def score_quantiles(quantiles: np.ndarray, levels, actual: np.ndarray, std: np.ndarray, axis: int | tuple[int, ...] | None = None) -> dict:
    """CRPS, pinball loss, and coverage and width of each central interval, averaged over `axis` as `score`.

    quantiles are [N, H, T, Q] in data units at `levels` [Q]; actual [N, H, T]; std as in `score`
    ([T] or per window [N, 1, T]). All on standardised values:
      pinball = mean over levels of max(q (y - f_q), (q - 1)(y - f_q)) (the training loss);
      crps = 2 x sum_k w_k pinball_k, the midpoint rule for CRPS = 2 x integral over q in (0, 1) of
      the pinball loss, w_k the width of level k's cell of (0, 1) (`forecast.quantiles.weights`), so
      the figure does not depend on how the levels cluster; for levels symmetric about 0.5 the crps
      of a point forecast is exactly its MAE, so the two compare;
      coverage_<pct> = share of actual values inside [f_q, f_(1-q)], pct = 100 (1 - 2q);
      interval_width_<pct> = mean of f_(1-q) - f_q (in training-span standard deviations).
    """
    std = np.broadcast_to(std, actual.shape)  # [N, H, T]
    scaled, truth = quantiles / std[..., None], actual / std  # [N, H, T, Q], [N, H, T]
    loss = q.pinball(scaled, levels, truth)  # [N, H, T, Q]
    out = {"crps": _mean(2 * loss @ q.weights(list(levels)), axis), "pinball": _mean(loss.mean(axis=-1), axis)}
    for lo, hi, pct in q.intervals(list(levels)):
        inside = (truth >= scaled[..., lo]) & (truth <= scaled[..., hi])  # [N, H, T]
        out[f"coverage_{pct}"] = _mean(inside.astype(np.float64), axis)
        out[f"interval_width_{pct}"] = _mean(scaled[..., hi] - scaled[..., lo], axis)
    return out


def last_value(inputs: np.ndarray, target_index: list[int], horizon: int) -> np.ndarray:
    """The baseline every score is shown beside: each target's last input value [N, H, T], repeated (a view)."""
    last = inputs[:, -1:, target_index]  # [N, 1, T]
    return np.broadcast_to(last, (len(inputs), horizon, len(target_index)))


def _mean(values: np.ndarray, axis):
    out = values.mean(axis=axis)
    return float(out) if axis is None else out
