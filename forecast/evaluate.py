"""A trained model on the test span: every window forecast, scored beside the last-value baseline.

Forecasting is `Forecaster.forecast` and scoring `forecast.scoring.score`, as everywhere else, so
a training's test figures mean what predict's backtest and retrain's holdout figures mean.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from forecast import scoring
from forecast.forecaster import Forecaster


@dataclass
class TestForecasts:
    """Forecasts of every test window, in data units."""

    origins: np.ndarray  # [N] forecast origin row of each window
    pred: np.ndarray  # [N, H, T] forecast
    actual: np.ndarray  # [N, H, T] actual values
    last: np.ndarray  # [N, H, T] the last-value baseline's forecast (a view)
    std: np.ndarray  # [T] the targets' training-span std, which the scaled scores divide by; a fleet's: [N, 1, T], each device's
    quantiles: np.ndarray | None = None  # [N, H, T, Q] calibrated quantile forecasts (None: a point model)
    levels: list[float] = field(default_factory=list)  # [Q] their levels
    series: np.ndarray | None = None  # [N] a fleet's device number of each window (forecast/fleet_evaluate.py); None: one series


def forecast_test(forecaster: Forecaster, frame: pd.DataFrame, origins: np.ndarray) -> TestForecasts:
    inputs, actual = forecaster.windows(frame, origins)  # [N, L, C], [N, H, T]
    pred = forecaster.forecast(inputs)  # [N, H, T]
    last = scoring.last_value(inputs, forecaster.target_index, forecaster.horizon)
    std = forecaster.scaler.std[forecaster.target_index]
    if not forecaster.levels:
        return TestForecasts(origins, pred, actual, last, std)
    return TestForecasts(origins, pred, actual, last, std, forecaster.forecast_quantiles(inputs), list(forecaster.levels))


def test_metrics(f: TestForecasts) -> dict[str, float]:
    """`test/*` for the model and `baseline/*` for repeating the last value, on the same windows.

    With quantiles also `test/crps`, `test/pinball`, `test/coverage_<pct>`, `test/interval_width_<pct>`.
    """
    model, baseline = scoring.score(f.pred, f.actual, f.std), scoring.score(f.last, f.actual, f.std)
    if f.quantiles is not None:
        model |= scoring.score_quantiles(f.quantiles, f.levels, f.actual, f.std)
    return {**{f"test/{k}": v for k, v in model.items()}, **{f"baseline/{k}": v for k, v in baseline.items()}}


def breakdown(f: TestForecasts) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The scores by horizon step ([H] each) and by test window ([N] each, with its origin).

    The per-window losses are what a paired test (Diebold-Mariano) compares. With quantiles both
    also hold crps, pinball and each interval's coverage and width.
    """
    steps = scoring.score(f.pred, f.actual, f.std, axis=(0, 2))
    windows = {"origin": f.origins, **scoring.score(f.pred, f.actual, f.std, axis=(1, 2))}
    if f.quantiles is not None:
        steps |= scoring.score_quantiles(f.quantiles, f.levels, f.actual, f.std, axis=(0, 2))
        windows |= scoring.score_quantiles(f.quantiles, f.levels, f.actual, f.std, axis=(1, 2))
    return steps, windows


@torch.no_grad()
def latency_ms(forecaster: Forecaster, inputs: np.ndarray, batch_sizes=(1, 256), repeats: int = 20) -> dict[int, float]:
    """Median milliseconds per window of the network's forward pass at each batch size (after one warm-up call).

    `inputs` are raw windows [N, L, C]; windows repeat when N is below a batch size.
    """
    net, device = forecaster.net.eval(), forecaster.device
    out = {}
    for b in batch_sizes:
        x = torch.from_numpy(forecaster.scaler.transform(inputs[np.arange(b) % len(inputs)], np.float32)).to(device)
        net(x)
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            net(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        out[b] = 1000 * statistics.median(times) / b
    return out
