"""Baselines that give every recurrent figure its context, run by the same pipeline.

    last_value      repeat the last observed value over the horizon (no parameters)
    seasonal_naive  repeat the last season of `period` steps (no parameters)
    linear          one linear map from lookback to horizon per channel: NLinear with norm="last",
                    DLinear with a moving-average decomposition (decompose > 0)

Each maps x [B, L, C] (standardised) to y [B, H, T] like `RecurrentNet`; the linear map, given
quantiles, to y [B, H, T, Q]. The last-value and seasonal-naive baselines stay point forecasts: their
quantiles come from validation residuals (`forecast.quantiles.calibrate`).
"""

from __future__ import annotations

import torch
from torch import nn

from forecast.errors import InputError
from forecast.norm import WindowNorm
from forecast.quantiles import levels as quantile_levels
from forecast.quantiles import median_index, monotone


class LastValue(nn.Module):
    """Repeat each target's last value for all H steps.

    Args:
        n_inputs: channels in each input window.
        target_index: positions of the targets among the inputs.
        lookback: L, steps in each input window.
        horizon: H, steps forecast.
    """

    def __init__(self, n_inputs: int, target_index: list[int], lookback: int, horizon: int):
        super().__init__()
        self.lookback, self.horizon = lookback, horizon
        self.register_buffer("t", torch.as_tensor(list(target_index)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = x[:, -1:, :].index_select(2, self.t)  # [B, 1, T]
        return last.expand(-1, self.horizon, -1)  # [B, H, T]


class SeasonalNaive(nn.Module):
    """Repeat the last `period` steps of each target over the horizon.

    Args:
        n_inputs: channels in each input window.
        target_index: positions of the targets among the inputs.
        lookback: L, steps in each input window; at least `period`.
        horizon: H, steps forecast.
        period: season length in steps (24 for a daily cycle in hourly data).
    """

    def __init__(self, n_inputs: int, target_index: list[int], lookback: int, horizon: int, period: int = 24):
        super().__init__()
        if not 1 <= period <= lookback:
            raise InputError(f"model.period={period} must be between 1 and data.lookback={lookback}")
        self.lookback, self.horizon = lookback, horizon
        self.register_buffer("t", torch.as_tensor(list(target_index)), persistent=False)
        self.register_buffer(
            "steps", torch.arange(lookback - period, lookback).repeat((horizon + period - 1) // period)[:horizon], persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.steps).index_select(2, self.t)  # [B, H, T]


class LinearNet(nn.Module):
    """A linear map from the lookback to the horizon, per channel (NLinear / DLinear).

    Args:
        n_inputs: channels in each input window.
        target_index: positions of the targets among the inputs.
        lookback: L, steps in each input window.
        horizon: H, steps forecast.
        norm: per-window normalisation, "none", "last" (NLinear) or "revin", as the recurrent model.
        individual: a separate map per channel; False shares one map across channels.
        decompose: moving-average kernel for a trend/season split with one map each (DLinear's 25);
            0 turns the decomposition off.
        quantiles: forecast these levels (0.5 is always added), one map per level, [B, H, T, Q]
            made non-crossing by `forecast.quantiles.monotone`; None or [] for a point forecast.
    """

    def __init__(
        self,
        n_inputs: int,
        target_index: list[int],
        lookback: int,
        horizon: int,
        norm: str = "last",
        individual: bool = False,
        decompose: int = 0,
        quantiles: list[float] | None = None,
    ):
        super().__init__()
        if decompose < 0:
            raise InputError(f"model.decompose must be 0 (off) or a kernel size, got {decompose}")
        self.lookback, self.horizon, self.decompose = lookback, horizon, decompose
        self.window_norm = WindowNorm(norm, n_inputs, target_index)
        self.register_buffer("t", torch.as_tensor(list(target_index)), persistent=False)
        maps = n_inputs if individual else 1
        self.levels = quantile_levels(quantiles)
        out = horizon * max(len(self.levels), 1)  # H values per channel, H * Q with quantiles
        self.season = nn.Parameter(torch.zeros(maps, lookback, out))
        self.trend = nn.Parameter(torch.zeros(maps, lookback, out)) if decompose else None
        self.bias = nn.Parameter(torch.zeros(maps, 1, out))
        nn.init.uniform_(self.season, -1 / lookback, 1 / lookback)
        if decompose:
            nn.init.uniform_(self.trend, -1 / lookback, 1 / lookback)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, stats = self.window_norm(x)  # [B, L, C]
        x = x.transpose(0, 2)  # [C, L, B]: one map per channel
        if self.decompose:
            trend = _moving_average(x.transpose(1, 2), self.decompose).transpose(1, 2)  # [C, L, B]
            y = (x - trend).transpose(1, 2) @ self.season + trend.transpose(1, 2) @ self.trend  # [C, B, H]
        else:
            y = x.transpose(1, 2) @ self.season  # [C, B, H] ([C, B, H*Q] with quantiles)
        y = y + self.bias
        if self.levels:
            y = monotone(y.reshape(*y.shape[:2], self.horizon, len(self.levels)), median_index(self.levels))  # [C, B, H, Q]
            y = y.permute(1, 2, 0, 3)  # [B, H, C, Q]
        else:
            y = y.permute(1, 2, 0)  # [B, H, C]
        return self.window_norm.inverse(y.index_select(2, self.t), stats)  # [B, H, T] ([B, H, T, Q])


def _moving_average(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Centred moving average along the last axis, edges padded by repetition (as DLinear)."""
    front, back = (kernel - 1) // 2, kernel // 2  # x: [..., L]
    padded = torch.cat([x[..., :1].expand(*x.shape[:-1], front), x, x[..., -1:].expand(*x.shape[:-1], back)], dim=-1)
    return padded.unfold(-1, kernel, 1).mean(-1)  # [..., L]
