"""The data module: one validated frame -> scaled array -> train/val/test windows and loaders.

Everything is computed once, when the module is built, so that data errors surface before any
model or tracking run exists and the model can be sized from the data (channels, targets).
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from forecast.errors import InputError
from forecast.frame import CsvSpec, load_frame
from forecast.reading import shown
from forecast.windows import SPLITS, Scaler, ShuffledOrder, WindowDataset, as_batch, split_rows, window_origins


class WindowsModule(L.LightningDataModule):
    """What both data modules (one series here, a fleet in forecast/fleet_datamodule.py) give the
    training: their windows per split, the model's shapes and a loader per split (`_loader`)."""

    @property
    def n_inputs(self) -> int:
        return len(self.inputs)

    @property
    def windows(self) -> dict[str, int]:
        """Windows per split."""
        return {split: len(ds) for split, ds in self.datasets.items()}

    def model_args(self) -> dict:
        """What the model must know about the data to be built."""
        return {"lookback": self.lookback, "horizon": self.horizon, "n_inputs": self.n_inputs, "target_index": self.target_index}

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class SensorDataModule(WindowsModule):
    """Sensor CSV -> windows for training, validation and testing.

    Args:
        path: a CSV file, a glob, or a folder of CSV drops read as one series.
        name: the dataset's name, used as the MLflow `dataset` tag.
        lookback: L, input steps per window.
        horizon: H, steps forecast at once.
        val_fraction: share of the rows whose targets form the validation span (ignored with borders).
        test_fraction: share of the rows, at the end, whose targets form the test span.
        borders: [train_end, val_end, test_end] row indices; overrides the fractions (ETT protocol).
        batch_size: windows per training batch.
        train_stride: use every n-th training window (1 = all); validation and test use all.
        train_fraction: keep only the most recent fraction of the training windows (1 = all), to
            measure small-data behaviour; the scaler, validation and test are unchanged.
        num_workers: DataLoader worker processes.
        pin_memory: pin batches in page-locked memory (faster host-to-GPU copies).
        **read: how to read the CSV, passed to `CsvSpec` (sep, decimal, timestamp, targets, ...).
    """

    def __init__(
        self,
        path: str,
        name: str = "csv",
        lookback: int = 96,
        horizon: int = 24,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        borders: list[int] | None = None,
        batch_size: int = 256,
        train_stride: int = 1,
        train_fraction: float = 1.0,
        num_workers: int = 0,
        pin_memory: bool = False,
        **read,
    ):
        super().__init__()
        check_settings(
            {
                "lookback": lookback,
                "horizon": horizon,
                "batch_size": batch_size,
                "train_stride": train_stride,
                "num_workers": num_workers,
                "val_fraction": val_fraction,
                "test_fraction": test_fraction,
                "train_fraction": train_fraction,
            },
            read,
        )
        self.name, self.lookback, self.horizon = name, int(lookback), int(horizon)
        self.batch_size, self.num_workers, self.pin_memory = int(batch_size), int(num_workers), pin_memory

        self.path, self.long = str(path), read.get("layout") == "long"
        self.frame, self.report = load_frame(CsvSpec(path=self.path, **read))
        self.targets, self.covariates = list(self.report.targets), list(self.report.covariates)
        self.inputs = self.targets + self.covariates
        self.target_index = list(range(len(self.targets)))  # targets come first in the frame

        values = self.frame[self.inputs].to_numpy(dtype=np.float64)  # [T, C]
        need = self.lookback + self.horizon
        if len(values) < need:
            raise self._too_little(f"{len(values)} rows after cleaning, fewer than lookback + horizon = {need}", values)
        self.spans = split_rows(len(values), val_fraction, test_fraction, borders)
        train_end = self.spans["train"][1]
        with np.errstate(all="ignore"):
            self.scaler = Scaler.fit(values[:train_end])
            scaled = self.scaler.transform(values, np.float32)  # [T, C], the one copy windows view
        self._check_scaled(values, scaled)
        series = torch.from_numpy(scaled)
        valid = ~np.isnan(values).any(axis=1)
        self.datasets = {}
        for split in SPLITS:
            stride = int(train_stride) if split == "train" else 1
            origins = window_origins(self.spans[split], self.lookback, self.horizon, valid, stride)
            if split == "train":
                origins = origins[len(origins) - max(1, round(len(origins) * float(train_fraction))) :]  # the most recent
            least = 2 if split == "train" else 1  # one training window teaches nothing
            if len(origins) < least:
                start, end = self.spans[split]
                complete = len(window_origins(self.spans[split], self.lookback, self.horizon, valid))
                if complete >= least:
                    chosen = [
                        f"data.{k}={v}"
                        for k, v in {"train_stride": train_stride, "train_fraction": train_fraction}.items()
                        if float(v) != 1
                    ]
                    raise InputError(
                        f"{' and '.join(chosen)} leave{'s' * (len(chosen) == 1)} {len(origins)} of the {complete:,} "
                        "training windows; at least 2 are needed.\nLower data.train_stride or raise data.train_fraction."
                    )
                raise self._too_little(
                    f"the {split} span (rows {start}-{end}) holds {complete or 'no'} complete window"
                    f"{'s' * (complete > 1)} of lookback {self.lookback} + horizon {self.horizon}",
                    values,
                    (max(0, start - self.lookback), end),
                )
            self.datasets[split] = WindowDataset(series, origins, self.lookback, self.horizon, self.target_index)

    def _too_little(self, what: str, values: np.ndarray, rows: tuple[int, int] | None = None) -> InputError:
        """An error about too little data naming the column whose gaps removed it, with the data report before it."""
        span = values[slice(*rows) if rows else slice(None)]
        masked = np.isnan(span).sum(axis=0)  # [C] masked cells in the rows windows would use
        missing = self.report.missing_by_column
        kind = "sensor" if self.long else "column"
        if masked.any():
            name = self.inputs[int(np.argmax(masked))]
            why = f"; {kind} '{shown(name)}' is masked in {int(masked.max()):,} of those {len(span):,} rows (gaps longer than data.max_gap)"
        elif missing and max(missing.values()) > 0.1 * self.report.grid_steps:
            name = max(missing, key=missing.get)
            why = f"; {kind} '{shown(name)}' is missing in {missing[name]:,} of {self.report.grid_steps:,} rows"
        else:
            return InputError(
                f"'{self.path}': {what}.\nLower data.lookback / data.horizon, use a longer file, or change "
                "data.val_fraction / data.test_fraction.",
                context=self.report.lines(),
            )
        if name in self.targets and len(self.targets) > 1:
            fix = f"Leave it out with data.targets=[{','.join(shown(t) for t in self.targets if t != name)}], raise"
        elif name in self.covariates:
            fix = f"Leave it out with data.covariates=[{','.join(shown(c) for c in self.covariates if c != name)}], raise"
        else:
            fix = "Raise"
        return InputError(
            f"'{self.path}': {what}{why}.\n{fix} data.max_gap to interpolate its gaps, use a file where it has "
            "readings, or lower data.lookback / data.horizon.",
            context=self.report.lines(),
        )

    def _check_scaled(self, values: np.ndarray, scaled: np.ndarray) -> None:
        """Every column standardises to finite float32 values (a reading far outside the training span's may not)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: their windows are dropped anyway
            largest = np.maximum(np.abs(np.nanmax(scaled, axis=0)), np.abs(np.nanmin(scaled, axis=0)))  # [C], no full-size temporary
        suspect = np.isinf(largest) | np.isinf(self.scaler.mean) | np.isinf(self.scaler.std)
        for column in np.flatnonzero(suspect):
            bad = ~np.isfinite(scaled[:, column]) & ~np.isnan(values[:, column])  # [T]
            row, name = int(np.argmax(bad)), self.inputs[column]
            raise InputError(
                f"'{self.path}': column '{shown(name)}' at {self.frame.index[row]}: {values[row, column]:g} standardised "
                f"with the training span's mean {self.scaler.mean[column]:.4g} and std {self.scaler.std[column]:.4g} "
                "overflows float32.\nCheck that reading; if it is real, rescale the column to smaller units.",
                context=self.report.lines(),
            )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return loader(self.datasets[split], self.batch_size, shuffle, self.num_workers, self.pin_memory)


def check_settings(settings: dict, read: dict) -> None:
    """Refuses window settings of the wrong type or range and unknown reading settings (InputError)."""
    for setting, value in settings.items():
        whole = setting not in ("val_fraction", "test_fraction", "train_fraction")
        if not isinstance(value, numbers.Integral if whole else numbers.Real) or isinstance(value, bool):
            raise InputError(
                f"data.{setting}={value!r} is not a {'whole ' * whole}number.\nFix data.{setting} (conf/data/csv.yaml "
                "lists every data setting with its default)."
            )
    lookback, horizon, batch_size, train_stride = (settings[k] for k in ("lookback", "horizon", "batch_size", "train_stride"))
    if int(lookback) < 1 or int(horizon) < 1:
        raise InputError(f"data.lookback and data.horizon must be positive numbers of steps, got lookback={lookback}, horizon={horizon}")
    if int(batch_size) < 1 or int(train_stride) < 1:
        raise InputError(f"data.batch_size and data.train_stride must be positive, got {batch_size} and {train_stride}")
    if not 0 < float(settings["train_fraction"]) <= 1:
        raise InputError(f"data.train_fraction must be in (0, 1], got {settings['train_fraction']}")
    unknown = set(read) - {f.name for f in dataclasses.fields(CsvSpec)}
    if unknown:
        raise InputError(f"unknown data setting(s): {', '.join(sorted('data.' + k for k in unknown))}")


def loader(dataset, batch_size: int, shuffle: bool, num_workers: int, pin_memory: bool) -> DataLoader:
    """Batches of a window dataset: shuffled (training) or in order; evaluation batches hold at least 512 windows."""
    return DataLoader(
        dataset,
        batch_size=batch_size if shuffle else max(batch_size, 512),
        sampler=ShuffledOrder(dataset) if shuffle else None,
        collate_fn=as_batch,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
