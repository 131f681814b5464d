"""Per-window normalisation, shared by every network so that comparisons stay fair."""

from __future__ import annotations

import torch
from torch import nn

from forecast.errors import InputError

NORMS = ("none", "last", "revin")


class WindowNorm(nn.Module):
    """Per-window normalisation, shared by every network so that comparisons stay fair.

    Args:
        norm: "none"; "last" (subtract the window's last value, add it back to the forecast); or
            "revin" (subtract the window mean, divide by its std, then a learned affine map per
            channel; inverted on the forecast).
        n_inputs: channels of the input window.
        target_index: positions of the targets among the inputs, in output order.
    """

    def __init__(self, norm: str, n_inputs: int, target_index: list[int]):
        super().__init__()
        if norm not in NORMS:
            raise InputError(f"model.norm={norm!r} is not one of {', '.join(NORMS)}")
        self.norm = norm
        self.register_buffer("t", torch.as_tensor(list(target_index), dtype=torch.long), persistent=False)
        if norm == "revin":
            self.weight = nn.Parameter(torch.ones(n_inputs))
            self.bias = nn.Parameter(torch.zeros(n_inputs))

    def forward(self, x: torch.Tensor):
        if self.norm == "last":
            last = x[:, -1:, :].detach()  # [B, 1, C]
            return x - last, (last,)
        if self.norm == "revin":
            mean = x.mean(dim=1, keepdim=True).detach()  # [B, 1, C]
            std = (x.var(dim=1, keepdim=True, unbiased=False) + 1e-5).sqrt().detach()
            return (x - mean) / std * self.weight + self.bias, (mean, std)
        return x, ()

    def inverse(self, y: torch.Tensor, stats) -> torch.Tensor:
        t = self.t  # y: [B, H, T], or [B, H, T, Q] for quantile forecasts (every level shifted alike)
        at = (lambda v: v.unsqueeze(-1)) if y.dim() == 4 else (lambda v: v)  # noqa: E731
        if self.norm == "last":
            return y + at(stats[0][..., t])
        if self.norm == "revin":
            mean, std = stats
            y = (y - at(self.bias[t])) / (at(self.weight[t]) + 1e-10)
            return y * at(std[..., t]) + at(mean[..., t])
        return y
