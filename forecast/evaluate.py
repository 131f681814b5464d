"""Test-span evaluation: forecasts for every test window, their errors, and the last-value baseline.

Errors are reported twice: on the standardised values (`*_scaled`, as published benchmarks do)
and in the data's own units (MAE, RMSE), averaged over windows, horizon steps and targets.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from forecast.windows import Scaler, WindowDataset


@dataclass
class Forecasts:
    """Standardised forecasts and truths for every window of a span."""

    origins: np.ndarray      # [N] forecast origin row of each window
    pred: np.ndarray         # [N, H, T] standardised forecast
    true: np.ndarray         # [N, H, T] standardised actual values
    last: np.ndarray         # [N, 1, T] standardised last input value (the baseline's forecast)


@torch.no_grad()
def forecast_windows(net: torch.nn.Module, dataset: WindowDataset, batch_size: int = 1024) -> Forecasts:
    """Run `net` over every window of `dataset`, in order, on the device the net lives on."""
    net.eval()
    device = next(itertools.chain(net.parameters(), net.buffers())).device
    targets = dataset.targets
    preds, trues, lasts = [], [], []
    for start in range(0, len(dataset), batch_size):
        x, y = dataset.__getitems__(list(range(start, min(start + batch_size, len(dataset)))))
        preds.append(net(x.to(device)).float().cpu())             # [b, H, T]
        trues.append(y)                                           # [b, H, T]
        lasts.append(x[:, -1:, targets])                          # [b, 1, T]
    cat = lambda parts: torch.cat(parts).numpy().astype(np.float64)  # noqa: E731
    return Forecasts(dataset.origins, cat(preds), cat(trues), cat(lasts))


def errors(pred: np.ndarray, true: np.ndarray, scaler: Scaler, target_index: list[int]) -> dict[str, float]:
    """MSE/MAE on standardised values and MAE/RMSE in data units, averaged over everything."""
    diff = pred - true
    raw = diff * scaler.std[target_index]                         # scaling by std undoes standardisation of a difference
    return {
        "mse_scaled": float(np.mean(diff**2)),
        "mae_scaled": float(np.mean(np.abs(diff))),
        "mae": float(np.mean(np.abs(raw))),
        "rmse": float(np.sqrt(np.mean(raw**2))),
    }


def test_metrics(f: Forecasts, scaler: Scaler, target_index: list[int]) -> dict[str, float]:
    """`test/*` for the model and `baseline/*` for repeating the last value, on the same windows."""
    model = errors(f.pred, f.true, scaler, target_index)
    baseline = errors(np.broadcast_to(f.last, f.true.shape), f.true, scaler, target_index)
    return {**{f"test/{k}": v for k, v in model.items()}, **{f"baseline/{k}": v for k, v in baseline.items()}}


def breakdown(f: Forecasts) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Scaled MSE and MAE by horizon step ([H] each) and by test window ([N] each, with its origin).

    The per-window losses are what a paired test (Diebold-Mariano, Wilcoxon) compares.
    """
    diff = f.pred - f.true                                        # [N, H, T]
    squared, absolute = diff**2, np.abs(diff)
    steps = {"mse_scaled": squared.mean(axis=(0, 2)), "mae_scaled": absolute.mean(axis=(0, 2))}
    windows = {"origin": f.origins, "mse_scaled": squared.mean(axis=(1, 2)), "mae_scaled": absolute.mean(axis=(1, 2))}
    return steps, windows


@torch.no_grad()
def latency_ms(net: torch.nn.Module, dataset: WindowDataset, batch_sizes=(1, 256), repeats: int = 20) -> dict[int, float]:
    """Median milliseconds per window of a forward pass at each batch size (after one warm-up call)."""
    net.eval()
    device = next(itertools.chain(net.parameters(), net.buffers())).device
    out = {}
    for b in batch_sizes:
        x, _ = dataset.__getitems__([i % len(dataset) for i in range(b)])
        x = x.to(device)
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
