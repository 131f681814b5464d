"""The paired test behind a comparison's verdict: Diebold-Mariano with a Newey-West variance.

Two forecasters are scored on the same test windows. `loss_a[i]` and `loss_b[i]` are their
losses on window i (e.g. the scaled MSE of the window). The test asks whether the mean of the
loss differential d = loss_a - loss_b is zero. Windows one step apart share H - 1 target rows, so
d is autocorrelated up to lag H - 1; the Newey-West (Bartlett kernel) long-run variance accounts
for it, where a plain t-test would be far too confident.

    Diebold and Mariano, "Comparing Predictive Accuracy", J. Business & Economic Statistics, 1995.
    Newey and West, "A Simple, Positive Semi-Definite, Heteroskedasticity and Autocorrelation
    Consistent Covariance Matrix", Econometrica, 1987.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class PairedTest:
    """Result of a Diebold-Mariano test of loss_a against loss_b."""

    mean_diff: float  # mean of loss_a - loss_b (negative: a has the lower loss)
    statistic: float  # DM statistic, asymptotically standard normal under equal accuracy
    p_value: float  # two-sided
    lag: int  # autocovariance lags in the Newey-West variance
    n: int  # paired observations


def newey_west_variance(d: np.ndarray, lag: int) -> float:
    """Long-run variance of the series d: gamma_0 + 2 * sum_k (1 - k / (lag + 1)) * gamma_k."""
    e = d - d.mean()
    n = len(e)
    gamma = [e[k:] @ e[: n - k] / n for k in range(min(lag, n - 1) + 1)]  # autocovariances
    return gamma[0] + 2 * sum((1 - k / (lag + 1)) * gamma[k] for k in range(1, len(gamma)))


def diebold_mariano(loss_a, loss_b, lag: int) -> PairedTest:
    """Two-sided DM test that loss_a and loss_b have the same mean; `lag` = horizon - 1 for
    forecasts from windows one step apart."""
    d = np.asarray(loss_a, dtype=np.float64) - np.asarray(loss_b, dtype=np.float64)
    n = len(d)
    if n < 2:
        raise ValueError(f"a paired test needs at least two paired losses, got {n}")
    mean, variance = float(d.mean()), newey_west_variance(d, lag)
    if variance <= 0:  # a constant differential: certain if non-zero
        statistic = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        statistic = mean / math.sqrt(variance / n)
    return PairedTest(mean, statistic, math.erfc(abs(statistic) / math.sqrt(2)), lag, n)
