"""Windows: splits by time, a scaler fitted on the training span, and windows that are views.

A window is identified by its forecast origin t: its input is rows [t - L, t) and its target is
rows [t, t + H). A window belongs to the split that holds its whole target span; its lookback may
reach back into the previous split, as the standard ETT protocol does. Windows that touch a
masked (NaN) row are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, RandomSampler

from forecast.errors import InputError

SPLITS = ("train", "val", "test")


def split_rows(n_rows: int, val_fraction: float, test_fraction: float, borders: list[int] | None) -> dict[str, tuple[int, int]]:
    """Row spans [start, end) of the train, val and test targets.

    `borders` = [train_end, val_end, test_end] fixes them by row index (the ETT protocol); else the
    last `test_fraction` of the rows is the test span and the `val_fraction` before it validation.
    """
    if borders is not None:
        if len(borders) != 3 or not 0 < borders[0] < borders[1] < borders[2]:
            raise InputError(f"data.borders must be three increasing row numbers [train_end, val_end, test_end], got {list(borders)}")
        if borders[2] > n_rows:
            raise InputError(
                f"data.borders ends at row {borders[2]} but the series has {n_rows} rows; "
                "lower data.borders or use fractions (data.borders=null)"
            )
        a, b, c = (int(v) for v in borders)
    else:
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise InputError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be in (0, 1) and sum below 1")
        c = n_rows
        b = n_rows - round(n_rows * test_fraction)
        a = b - round(n_rows * val_fraction)
    return {"train": (0, a), "val": (a, b), "test": (b, c)}


def window_origins(span: tuple[int, int], lookback: int, horizon: int, valid: np.ndarray, stride: int = 1) -> np.ndarray:
    """Forecast origins t whose target [t, t+H) lies in `span` and whose rows [t-L, t+H) are all valid."""
    start, end = max(span[0], lookback), span[1] - horizon
    origins = np.arange(start, end + 1, stride, dtype=np.int64)
    if valid.all():  # nothing to drop (and no full-length temporaries)
        return origins
    bad = np.concatenate([[0], np.cumsum(~valid)])  # bad[i] = invalid rows before row i
    clean = bad[origins + horizon] - bad[origins - lookback] == 0
    return origins[clean]


@dataclass
class Scaler:
    """Per-column standardisation, fitted on the training rows only (population std, as sklearn)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
        return cls(mean=mean, std=np.where(std > 0, std, 1.0))  # a constant column keeps its offset only

    def transform(self, values: np.ndarray, dtype=np.float64, rows: int = 1 << 16) -> np.ndarray:
        """Standardised `values` as `dtype`, computed in blocks of `rows`: no full-size float64 temporary."""
        out = np.empty(values.shape, dtype)
        for start in range(0, len(values), rows):
            out[start : start + rows] = (values[start : start + rows] - self.mean) / self.std
        return out

    def inverse(self, values: np.ndarray, columns: list[int] | None = None) -> np.ndarray:
        idx = slice(None) if columns is None else columns
        return values * self.std[idx] + self.mean[idx]


class WindowDataset(Dataset):
    """Windows over one [R, C] tensor (R rows, C channels), built on demand from their origins; nothing is copied up front.

    `series.unfold` gives a [R-L-H+1, C, L+H] view of every possible window; a batch indexes it,
    so only the batch being served is ever materialised.
    """

    def __init__(self, series: torch.Tensor, origins: np.ndarray, lookback: int, horizon: int, target_index: list[int]):
        self.series = series  # [R, C], shared by all splits
        self.windows = series.unfold(0, lookback + horizon, 1)  # [R-L-H+1, C, L+H], a view
        self.origins = origins  # [N] forecast origin rows
        self.origin_rows = torch.from_numpy(origins)  # the same memory as origins, for tensor indexing
        self.lookback, self.target_index = lookback, torch.as_tensor(target_index)

    def __len__(self) -> int:
        return len(self.origins)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.windows[self.origin_rows[indices] - self.lookback]  # [B, C, L+H]: windows start L before their origin
        x = w[:, :, : self.lookback].transpose(1, 2)  # [B, L, C]
        y = w[:, self.target_index, self.lookback :].transpose(1, 2)  # [B, H, T]
        return x.contiguous(), y.contiguous()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]


class ShuffledOrder(RandomSampler):
    """RandomSampler's order, handed out from one int64 permutation in chunks.

    RandomSampler turns the whole permutation into a list of Python ints at once (about 32 bytes a
    window: 320 MB for 10M windows); this yields the same indices from the tensor (8 bytes a
    window). Still a RandomSampler, so Lightning's distributed sampler keeps shuffling under DDP.
    """

    def __iter__(self):
        generator = self.generator
        if generator is None:  # as RandomSampler: seeded from torch's RNG
            generator = torch.Generator().manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        for chunk in torch.randperm(len(self.data_source), generator=generator).split(1 << 16):
            yield from chunk.tolist()


def as_batch(batch):
    """Collate for `WindowDataset`: `__getitems__` already returns whole batches."""
    return batch
