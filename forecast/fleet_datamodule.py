"""The fleet data module: many devices' readings -> per-device scaled windows of one split in time -> loaders.

`python -m forecast.train data=fleet data.path=meters.csv data.series_column=device` builds it
(conf/data/fleet.yaml). Like `SensorDataModule` everything happens when it is built, so data errors
surface before any run exists. What the training, the evaluation and the saved model use:

    data.fleet            the Fleet (forecast/fleet.py); after building, fleet.values is standardised
                          per device (data units: value * std[d] + mean[d]). Under trainer=ddp only this
                          process's share of the devices (rank, world_size below): then every per-device
                          attribute here (mean, std, scaler, datasets, windows, report's cleaning counts) is
                          the share's; forecast/fleet_evaluate.py combines the shares' figures on rank zero
    data.mean, data.std   [D, C] each device's scaler, fitted on its training span (fleet_windows.fit_scalers)
    data.scaler           one Scaler of the whole fleet (per-column median of the devices'), for code
                          that forecasts one series without a device (a cold-start default, not for scoring)
    data.datasets         FleetWindows per split; batches are (x [B, L, C], y [B, H, T] with NaN where
                          masked, series [B])
    data.spans            {"train"|"val"|"test": (start_ns, end_ns)}: the same cut for every device
    data.report           FleetReport (lines(), to_dict(), devices table)
    data.targets, data.covariates, data.inputs, data.target_index, data.series_columns
    data.static_columns, data.static_values   the static columns and each one's category values (vocabulary)
    data.model_args()     lookback, horizon, n_inputs, target_index, n_series (devices, for an embedding),
                          step (ns, for calendar features), static_sizes (values per static column)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from forecast.datamodule import WindowsModule, check_settings, loader
from forecast.errors import InputError
from forecast.fleet import load_fleet, series_columns, static_names
from forecast.fleet_share import OwnShare, fewest
from forecast.fleet_windows import FleetWindows, fit_scalers, fleet_origins, scale, split_times
from forecast.frame import CsvSpec
from forecast.windows import SPLITS, Scaler, as_batch


class FleetDataModule(WindowsModule):
    """A fleet's readings -> windows of every device for training, validation and testing.

    Args:
        path: a long CSV file (or glob) with id column(s), or a folder with one CSV per device.
        series_column: the id column, or a list of them (e.g. [site, device]); for a folder, the
            name the file names (the ids) get.
        name: the dataset's name, used as the MLflow `dataset` tag.
        lookback: L, input steps per window.
        horizon: H, steps forecast at once.
        val_fraction: share of the fleet's time range whose targets form the validation span.
        test_fraction: share of the fleet's time range, at the end, whose targets form the test span.
        cuts: [train_end, val_end] or [train_end, val_end, test_end] timestamps; override the fractions.
        batch_size: windows per training batch.
        train_stride: use every n-th training window (1 = all).
        channel_independent: True: a window counts when at least one target channel is fully valid
            (the others are masked); False (a network that mixes channels): every input channel
            must be valid. conf/data/fleet.yaml takes it from model.channel_independent.
        static_columns: columns constant per device (e.g. site, model), read as text; each distinct
            value is a category the network learns a vector for (numbers too are categories). A
            column that changes within a device is an error. [] (default): none.
        calendar: batches carry each window's first forecast timestamp, for a network with calendar
            features; conf/data/fleet.yaml sets it when model.calendar is set.
        num_workers: DataLoader worker processes.
        pin_memory: pin batches in page-locked memory.
        rank, world_size: a data-parallel training (trainer=ddp; training.py passes them,
            forecast/fleet_share.py): this process keeps, regularises, scales and windows only its
            share of the devices (load_fleet's share: each device on exactly one process), cut at
            the whole fleet's timestamps; every process trains on as many of its own windows per
            epoch as the one with the fewest (DDP steps in lockstep) and tests its own devices
            (forecast/fleet_evaluate.py: rank zero combines the parts). No process holds the whole fleet.
        **read: how to read the CSV, passed to `CsvSpec` (timestamp, targets, na_values, max_gap, ...).
    """

    def __init__(
        self,
        path: str,
        series_column: str | list[str] = "device",
        name: str = "fleet",
        lookback: int = 96,
        horizon: int = 24,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        cuts: list | None = None,
        batch_size: int = 256,
        train_stride: int = 1,
        channel_independent: bool = True,
        static_columns: list[str] | None = None,
        calendar: bool | list = False,
        num_workers: int = 0,
        pin_memory: bool = False,
        rank: int = 0,
        world_size: int = 1,
        **read,
    ):
        super().__init__()
        self.rank, self.world_size = int(rank), int(world_size)
        numbers = {"lookback": lookback, "horizon": horizon, "batch_size": batch_size, "train_stride": train_stride}
        fractions = {"val_fraction": val_fraction, "test_fraction": test_fraction, "train_fraction": 1.0}
        if "borders" in read or "train_fraction" in read:
            name = "borders" if "borders" in read else "train_fraction"
            raise InputError(f"data.{name} does not apply to a fleet.\nCut it in time with data.cuts=[train_end,val_end] instead.")
        check_settings({**numbers, "num_workers": num_workers, **fractions}, read)
        self.name, self.lookback, self.horizon = name, int(lookback), int(horizon)
        self.batch_size, self.num_workers, self.pin_memory = int(batch_size), int(num_workers), pin_memory
        self.path, self.series_columns = str(path), series_columns(series_column)

        share = (self.rank, self.world_size) if self.world_size > 1 else None
        self.static_columns = static_names(static_columns)
        spec = CsvSpec(path=self.path, **read)
        self.fleet = load_fleet(spec, self.series_columns, self.lookback + self.horizon, share, self.static_columns)
        if self.world_size > 1:
            print(f"rank {self.rank} of {self.world_size}: {len(self.fleet):,} devices of this process's share", flush=True)
        self.report = self.fleet.report
        self.series_columns = self.fleet.id_columns  # a folder's ids: the first name only
        self.targets, self.covariates = list(self.fleet.targets), list(self.fleet.covariates)
        self.inputs = self.targets + self.covariates
        self.target_index = list(range(len(self.targets)))
        self.static_values = self.fleet.static_values  # [S] each static column's values: code k is the k-th
        codes = None
        if self.static_columns:
            pairs = zip(self.static_columns, self.static_values)
            codes = np.stack([pd.Index(v).get_indexer(self.fleet.static[c]) for c, v in pairs], axis=1)  # [D, S]
        clock = (self.fleet.first, self.fleet.step, self.fleet.tz) if calendar else None

        self.spans = split_times(self.fleet, float(val_fraction), float(test_fraction), cuts)
        self.mean, self.std = fit_scalers(self.fleet, self.spans["train"][1], self.lookback)
        self.scaler = Scaler(np.median(self.mean, axis=0), np.median(self.std, axis=0))
        scale(self.fleet, self.mean, self.std)
        self._check_scaled()
        series = torch.from_numpy(self.fleet.values)  # [R, C], the one array every window views
        rule, channels = ("any", self.target_index) if channel_independent else ("all", list(range(len(self.inputs))))
        self.datasets = {}
        for split in SPLITS:
            origins = fleet_origins(self.fleet, self.spans[split], self.lookback, self.horizon, channels, rule)
            origins = origins[:: int(train_stride)] if split == "train" else origins
            if len(origins) < (2 if split == "train" else 1):
                raise InputError(
                    f"'{self.path}': the {split} span ({self._when(split)}) holds {len(origins)} window(s) of lookback {self.lookback} + "
                    f"horizon {self.horizon} on any of the {len(self.fleet):,} devices.\nMove data.cuts or change data.val_fraction / "
                    "data.test_fraction, or lower data.lookback / data.horizon.",
                    context=self.report.lines(),
                )
            self.datasets[split] = FleetWindows(
                series, origins, self.lookback, self.horizon, self.target_index, self.fleet.start, clock=clock, static=codes
            )

    def _when(self, split: str) -> str:
        start, end = (pd.Timestamp(v, tz="UTC" if self.fleet.tz else None) for v in self.spans[split])
        return f"{start} to {end}"

    def _check_scaled(self) -> None:
        """Every device's standardised values are finite float32 (a reading far outside its training span's may not be)."""
        values = self.fleet.values
        infinite = np.isinf(values).any(axis=1)  # [R]
        if infinite.any():
            row = int(np.argmax(infinite))
            d = int(np.searchsorted(self.fleet.start, row, side="right") - 1)
            column = int(np.argmax(np.isinf(values[row])))
            name = "/".join(map(str, self.fleet.ids.iloc[d]))
            raise InputError(
                f"'{self.path}': device '{name}', column '{self.inputs[column]}' at {self.fleet.index(d)[row - self.fleet.start[d]]}: "
                f"standardised with its training span's std {self.std[d, column]:.4g} it overflows float32.\n"
                "Check that reading; if it is real, rescale the column to smaller units.",
                context=self.report.lines(),
            )

    def model_args(self) -> dict:
        """What the model must know about the data to be built (n_series: devices, for an optional embedding)."""
        return super().model_args() | {
            "n_series": len(self.fleet),
            "step": int(self.fleet.step),
            "static_sizes": [len(values) for values in self.static_values],
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        if self.world_size == 1:
            return loader(dataset, self.batch_size, shuffle, self.num_workers, self.pin_memory)
        count = fewest(len(dataset)) if shuffle else len(dataset)  # training: the same number of steps on every process
        return DataLoader(
            dataset,
            batch_size=self.batch_size if shuffle else max(self.batch_size, 512),
            sampler=OwnShare(dataset, count, shuffle),
            collate_fn=as_batch,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )
