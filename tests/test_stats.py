"""The Diebold-Mariano test of forecast.stats on synthetic losses whose answer is known."""

import math

import numpy as np
import pytest

from forecast.stats import diebold_mariano, newey_west_variance


def test_equal_losses_are_not_significant():
    loss = np.random.default_rng(0).gamma(2.0, 0.2, size=400)
    result = diebold_mariano(loss, loss.copy(), lag=23)
    assert result.statistic == 0 and result.p_value == 1.0 and result.mean_diff == 0


def test_a_clearly_better_model_is_significant_with_the_right_sign():
    rng = np.random.default_rng(1)
    worse = rng.gamma(2.0, 0.2, size=600)
    better = worse * 0.8 + rng.normal(0, 0.01, size=600)  # 20% lower loss on every window, a little noise
    result = diebold_mariano(better, worse, lag=23)
    assert result.p_value < 1e-6 and result.statistic < 0 and result.mean_diff < 0
    assert diebold_mariano(worse, better, lag=23).statistic == pytest.approx(-result.statistic)


def test_hand_computed_case():
    # d = [1, -1, 2, 0]: mean 0.5, centred e = [.5, -1.5, 1.5, -.5], gamma0 = 5/4, gamma1 = -3.75/4,
    # Newey-West with lag 1: 5/4 + 2 * (1/2) * (-15/16) = 5/16; DM = 0.5 / sqrt(5/16 / 4) = 4 / sqrt(5),
    # two-sided normal p = 2 * (1 - Phi(1.78885)) = 0.0736 (normal table).
    d = np.array([1.0, -1.0, 2.0, 0.0])
    assert newey_west_variance(d, lag=1) == pytest.approx(5 / 16)
    result = diebold_mariano(d, np.zeros(4), lag=1)
    assert result.statistic == pytest.approx(4 / math.sqrt(5))
    assert result.p_value == pytest.approx(0.0736, abs=5e-4)
    assert (result.n, result.lag) == (4, 1)


def test_overlapping_windows_need_the_newey_west_variance():
    """Equal models scored on overlapping windows (losses that are moving sums over 24 steps): the
    HAC test rejects at 5% about 5% of the time; ignoring the overlap (lag 0) rejects far too often."""
    rng = np.random.default_rng(2)
    kernel = np.ones(24)
    rejections = {23: 0, 0: 0}
    trials = 200
    for _ in range(trials):
        d = np.convolve(rng.normal(size=1000 + 23), kernel, mode="valid")  # [1000], autocorrelated up to lag 23
        for lag in rejections:
            rejections[lag] += diebold_mariano(d, np.zeros_like(d), lag=lag).p_value < 0.05
    assert rejections[23] / trials < 0.15
    assert rejections[0] / trials > 0.5


def test_a_constant_difference_is_certain():
    result = diebold_mariano(np.full(10, 1.0), np.full(10, 0.5), lag=3)
    assert result.p_value == 0.0 and result.statistic == math.inf


def test_too_few_windows_is_an_error():
    with pytest.raises(ValueError, match="at least two"):
        diebold_mariano([1.0], [2.0], lag=0)
