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


@dataclass
class SignedRankTest:
    """Result of a Wilcoxon signed-rank test of paired losses a against b (one pair per series)."""

    median_diff: float  # median of loss_a - loss_b (negative: a has the lower loss on the typical series)
    statistic: float  # W+, the sum of the ranks of the positive differences
    p_value: float  # two-sided
    n: int  # pairs with a non-zero difference (zeros are dropped, Wilcoxon's convention)
    exact: bool  # the exact null distribution (given the ties) rather than the normal approximation


EXACT_PAIRS = 200  # up to this many pairs the exact distribution is computed (a few ms)


def wilcoxon_signed_rank(loss_a, loss_b) -> SignedRankTest:
    """Two-sided Wilcoxon signed-rank test that the differences loss_a - loss_b are symmetric about zero.

    The pairs are independent series (e.g. devices of a fleet, each scored by both models), so no
    autocorrelation correction applies, and the test needs no normality of the differences. Ties
    get mid-ranks; up to EXACT_PAIRS pairs the p-value comes from the exact distribution of W+
    given those ranks, beyond from the normal approximation with the tie correction.

        Wilcoxon, "Individual Comparisons by Ranking Methods", Biometrics Bulletin, 1945.
    """
    d = np.asarray(loss_a, dtype=np.float64) - np.asarray(loss_b, dtype=np.float64)
    if np.isnan(d).any():
        raise ValueError("a paired loss is NaN")
    median = float(np.median(d)) if len(d) else math.nan
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return SignedRankTest(median, 0.0, 1.0, 0, True)
    ranks = _midranks(np.abs(d))  # [n], 1..n with ties averaged
    w = float(ranks[d > 0].sum())
    if n <= EXACT_PAIRS:
        doubled = np.rint(2 * ranks).astype(np.int64)  # mid-ranks are multiples of 1/2
        p = np.zeros(int(doubled.sum()) + 1)  # p[s]: probability that 2 W+ = s under the null
        p[0] = 1.0
        for r in doubled:  # each rank joins W+ with probability 1/2
            p[r:] = 0.5 * p[r:] + 0.5 * p[:-r].copy()
            p[:r] *= 0.5
        k = int(round(2 * w))
        tail = min(p[: k + 1].sum(), p[k:].sum())
        return SignedRankTest(median, w, float(min(1.0, 2 * tail)), n, True)
    _, counts = np.unique(ranks, return_counts=True)
    mean = n * (n + 1) / 4
    variance = n * (n + 1) * (2 * n + 1) / 24 - float((counts**3 - counts).sum()) / 48
    z = (w - mean - math.copysign(0.5, w - mean)) / math.sqrt(variance) if w != mean else 0.0  # continuity correction
    return SignedRankTest(median, w, math.erfc(abs(z) / math.sqrt(2)), n, False)


def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of `values`, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first position of each group of equal values
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks
