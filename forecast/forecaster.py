"""A trained forecaster: its network, the scaler of its training span and its columns, in one object.

Every forecast goes through `Forecaster.forecast` (raw readings in, forecasts in data units out):
the test evaluation of a training, `predict`, retrain's holdout, the served model and the
benchmarks. With quantiles, `Forecaster.forecast_quantiles` gives the calibrated levels beside it;
both run the network through one helper. Saved as one torch file (the bundle) that a CPU loads with
nothing else at hand.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from numpy.lib.stride_tricks import sliding_window_view
from pandas.tseries.frequencies import to_offset

from forecast import quantiles
from forecast.errors import InputError
from forecast.networks import build_network
from forecast.windows import Scaler


@dataclass
class Forecaster:
    """A network with what it needs to forecast from raw readings.

    net: maps standardised windows [B, L, C] to standardised forecasts [B, H, T].
    scaler: per-input-column mean and std of the training span.
    inputs: the network's input columns, in order; targets: the forecast columns, each one of them.
    freq: the step of the series it was trained on ("30min").
    net_args: the arguments that rebuild `net` (`forecast.networks.build_network`).
    levels: the quantile levels it forecasts (0.5 among them), [] for a point model. A network that
        emits them maps to [B, H, T, Q]; a point network (last value, seasonal naive) gets them from
        the calibration offsets alone.
    offsets: the calibration [H, T, Q] on standardised values (`forecast.quantiles.calibrate`),
        None before `calibrate`.

    A fleet model (forecast/fleet_datamodule.py) also carries:
    series_columns: the id column(s) of a device ([] for a single-series model).
    series_ids: the id of every device seen in training (tuples in series_columns order), in the
        order of the network's device embedding when it has one.
    series_mean, series_std: [D, C] the scaler of each seen device, fitted on its training span.
    `scaler` is then the per-column median of those: what `forecast` uses without a per-window scaler.
    Cold start: a device not seen in training is scaled on its own readings, the history a request
    sends (`series_scaler`), and given device number -1 (the embedding's mean vector, if any).
    static_columns: the static columns the network reads (data.static_columns), [] for none.
    static_values: each static column's category values seen in training, in the order of the
        network's vectors (`static_codes`: a value not among them gets code -1, the mean vector).
    A network with calendar features (model.calendar) needs each window's `origin` in `forecast`.
    """

    net: torch.nn.Module
    scaler: Scaler
    inputs: list[str]
    targets: list[str]
    freq: str
    net_args: dict
    levels: list[float] = field(default_factory=list)
    offsets: np.ndarray | None = None
    series_columns: list[str] = field(default_factory=list)
    series_ids: list[tuple] = field(default_factory=list)
    series_mean: np.ndarray | None = None
    series_std: np.ndarray | None = None
    static_columns: list[str] = field(default_factory=list)
    static_values: list[list[str]] = field(default_factory=list)

    @property
    def lookback(self) -> int:
        return self.net.lookback

    @property
    def horizon(self) -> int:
        return self.net.horizon

    @property
    def device(self) -> torch.device:
        """Where the network lives (a parameter-free baseline: where its buffers live)."""
        return next(itertools.chain(self.net.parameters(), self.net.buffers())).device

    @property
    def target_index(self) -> list[int]:
        """Position of each target among the inputs."""
        return [self.inputs.index(name) for name in self.targets]

    @property
    def uses(self) -> tuple[str, ...]:
        """The optional inputs the network reads: "series" (device numbers), "origin" (calendar), "static"."""
        return tuple(getattr(self.net, "uses", ()))

    def static_codes(self, values) -> np.ndarray:
        """[N, S] each row's code of every static column (text [N, S] in static_columns order); -1 for a value not seen in training."""
        values = np.asarray(values, dtype=object).reshape(-1, len(self.static_columns))
        codes = np.empty(values.shape, np.int64)
        for s, known in enumerate(self.static_values):
            number = {v: k for k, v in enumerate(known)}
            codes[:, s] = [number.get(str(v).strip(), -1) for v in values[:, s]]
        return codes

    def forecast(
        self,
        raw: np.ndarray,
        batch_size: int = 1024,
        scaler: Scaler | None = None,
        series: np.ndarray | None = None,
        *,
        origin: np.ndarray | None = None,
        static: np.ndarray | None = None,
    ) -> np.ndarray:
        """Raw input windows [N, L, C] (columns in `inputs` order) -> forecasts [N, H, T] in data units.

        With quantiles this is the network's median. scaler: each window's own scaler (a fleet's device
        scalers: mean and std [N, 1, C]); None: the model's one scaler. series: [N] each window's device
        number for a device embedding (-1: unseen); None: no device. origin: [N] int64 ns, the wall-clock
        time of each window's first forecast step (a network with calendar features needs it). static:
        [N, S] each window's static codes (`static_codes`; -1 for an unknown value). Each is used only by a
        network that reads it, and such a network requires it (InputError without).
        Runs on the device the network lives on, `batch_size` windows at a time.
        """
        scaler = scaler or self.scaler
        standardised = self._standardised(raw, batch_size, scaler, series, origin, static)  # [N, H, T] or [N, H, T, Q]
        if standardised.ndim == 4:
            standardised = standardised[..., quantiles.median_index(self.levels)]  # [N, H, T]
        t = self.target_index
        return standardised * scaler.std[..., t] + scaler.mean[..., t]

    def forecast_quantiles(
        self,
        raw: np.ndarray,
        batch_size: int = 1024,
        scaler: Scaler | None = None,
        series: np.ndarray | None = None,
        *,
        origin: np.ndarray | None = None,
        static: np.ndarray | None = None,
    ) -> np.ndarray:
        """Raw input windows [N, L, C] -> calibrated, non-crossing quantiles [N, H, T, Q] in data units, at `levels`.

        scaler and series as in `forecast`.
        """
        if not self.levels:
            raise InputError("this model forecasts points only; train it with model.quantiles=[0.1,0.5,0.9] for quantiles")
        scaler = scaler or self.scaler
        uncalibrated = self._uncalibrated(raw, batch_size, scaler, series, origin, static)  # [N, H, T, Q] standardised
        calibrated = quantiles.apply(uncalibrated, self.offsets, self.levels)  # [N, H, T, Q] standardised
        t = self.target_index
        return calibrated * scaler.std[..., t][..., None] + scaler.mean[..., t][..., None]

    def calibrate(
        self,
        raw: np.ndarray,
        actual: np.ndarray,
        scaler: Scaler | None = None,
        series: np.ndarray | None = None,
        *,
        origin: np.ndarray | None = None,
        static: np.ndarray | None = None,
    ) -> np.ndarray:
        """Calibrate the levels on held-out windows (the validation span): raw [N, L, C], actual [N, H, T] data units.

        Sets and returns `offsets` [H, T, Q] (split-conformal per step and target, `forecast.quantiles`).
        scaler and series as in `forecast`.
        """
        scaler = scaler or self.scaler
        t = self.target_index
        truth = (actual - scaler.mean[..., t]) / scaler.std[..., t]  # [N, H, T] standardised
        self.offsets = quantiles.calibrate(self._uncalibrated(raw, 1024, scaler, series, origin, static), self.levels, truth)
        return self.offsets

    def _uncalibrated(self, raw, batch_size: int, scaler: Scaler, series, origin=None, static=None) -> np.ndarray:
        """The network's quantiles [N, H, T, Q] on standardised values; a point network's forecast at every level."""
        standardised = self._standardised(raw, batch_size, scaler, series, origin, static)
        if standardised.ndim == 3:
            return np.repeat(standardised[..., None], len(self.levels), axis=-1)  # [N, H, T, Q]
        return standardised

    @torch.no_grad()
    def _standardised(self, raw: np.ndarray, batch_size: int, scaler: Scaler, series, origin=None, static=None) -> np.ndarray:
        """The one path through the network: raw windows [N, L, C] -> its output on standardised values (float64),
        [N, H, T] for a point network, [N, H, T, Q] for one that emits quantiles."""
        if origin is None and "origin" in self.uses:
            raise InputError("this model reads calendar features (model.calendar): give each window's first forecast timestamp (origin)")
        if static is None and "static" in self.uses:
            raise InputError(f"this model reads static columns ({', '.join(self.static_columns)}): give each window's codes (static_codes)")
        self.net.eval()
        device, out, per_window = self.device, [], scaler.mean.ndim == 3
        for start in range(0, len(raw), batch_size):
            stop = min(start + batch_size, len(raw))
            part = Scaler(scaler.mean[start:stop], scaler.std[start:stop]) if per_window else scaler
            x = torch.from_numpy(part.transform(raw[start:stop], np.float32)).to(device)  # [b, L, C]
            given = {k: v for k, v in {"series": series, "origin": origin, "static": static}.items() if v is not None and k in self.uses}
            extra = {k: torch.as_tensor(v[start:stop], dtype=torch.long, device=device) for k, v in given.items()}
            y = self.net(x, **extra)
            out.append(y.float().cpu().numpy())  # [b, H, T] or [b, H, T, Q]
        if out:
            return np.concatenate(out).astype(np.float64)
        emits = quantiles.levels(self.net_args.get("quantiles"))
        return np.empty((0, self.horizon, len(self.targets), *([len(emits)] if emits else [])))

    def series_index(self, ids: list[tuple]) -> np.ndarray:
        """[N] the device number of each id (a tuple in series_columns order); -1 for a device not seen in training."""
        known = {tuple(map(str, key)): d for d, key in enumerate(self.series_ids)}
        return np.array([known.get(tuple(map(str, key)), -1) for key in ids], dtype=np.int64)

    def series_scaler(self, index: np.ndarray, history: list[np.ndarray]) -> Scaler:
        """Scaler [N, 1, C] of each window: its seen device's (index >= 0), else fitted on its own history [n, C] (cold start)."""
        mean, std = np.empty((len(index), 1, len(self.inputs))), np.empty((len(index), 1, len(self.inputs)))
        for i, (d, rows) in enumerate(zip(index, history)):
            if d >= 0 and self.series_mean is not None:
                mean[i, 0], std[i, 0] = self.series_mean[d], self.series_std[d]
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    own = Scaler.fit(np.asarray(rows, dtype=np.float64))
                mean[i, 0] = np.where(np.isfinite(own.mean), own.mean, self.scaler.mean)
                std[i, 0] = np.where(np.isfinite(own.std), own.std, self.scaler.std)
        return Scaler(mean, std)

    def windows(self, frame: pd.DataFrame, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Input windows [N, L, C] (rows [t-L, t)) and actual values [N, H, T] (rows [t, t+H)) from each origin t.

        Views of the frame's values, not copies; an origin too close to the end has no actual values,
        so backtests pass origins with t + H <= rows.
        """
        values = frame[self.inputs].to_numpy(dtype=np.float64)  # [R, C]
        inputs = sliding_window_view(values, self.lookback, axis=0)[origins - self.lookback]  # [N, C, L]
        actual = sliding_window_view(values[:, self.target_index], self.horizon, axis=0)[origins]  # [N, T, H]
        return inputs.transpose(0, 2, 1), actual.transpose(0, 2, 1)

    def check(self, frame: pd.DataFrame, freq: str, source: str) -> None:
        """Raise InputError unless `frame` (a regular series at `freq`) has this model's columns and frequency."""
        missing = [c for c in self.inputs if c not in frame.columns]
        if missing:
            raise InputError(
                f"{source} lacks column(s) {', '.join(missing)} that the model reads; it has {', '.join(frame.columns)}.\n"
                f"The model needs {', '.join(self.inputs)}: point data.path at that kind of data or use another model."
            )
        if to_offset(freq) != to_offset(self.freq):
            raise InputError(
                f"{source} has a reading every {freq} but the model was trained on one every {self.freq}.\n"
                f"Resample it with data.freq={self.freq}, or use a model trained at {freq}."
            )
        if len(frame) < self.lookback:
            raise InputError(f"{source} has {len(frame)} rows every {freq}; the model needs at least the last {self.lookback} readings")

    def save(self, path: Path) -> Path:
        """Write the bundle: the network's arguments and weights, the scaler, the columns and the step."""
        torch.save(
            {
                "net_args": self.net_args,
                "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                "mean": [float(v) for v in self.scaler.mean],
                "std": [float(v) for v in self.scaler.std],
                "inputs": list(self.inputs),
                "targets": list(self.targets),
                "freq": self.freq,
                "levels": list(self.levels),
                "offsets": None if self.offsets is None else torch.from_numpy(np.asarray(self.offsets, dtype=np.float64)),
                "series_columns": list(self.series_columns),
                "series_ids": [list(map(str, key)) for key in self.series_ids],
                "series_mean": None if self.series_mean is None else np.asarray(self.series_mean, np.float64).tolist(),
                "series_std": None if self.series_std is None else np.asarray(self.series_std, np.float64).tolist(),
                "static_columns": list(self.static_columns),
                "static_values": [list(map(str, values)) for values in self.static_values],
            },
            path,
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> Forecaster:
        """The bundle written by `save`, on the CPU; read without unpickling code (weights_only).

        A bundle from before quantiles (no `levels`, no `offsets`) loads as a point model; one from
        before static and calendar inputs (no `static_columns`) as a model without them.
        """
        b = torch.load(path, map_location="cpu", weights_only=True)
        net = build_network(**b["net_args"])
        net.load_state_dict(b["state_dict"])
        net.eval()
        scaler = Scaler(mean=np.asarray(b["mean"]), std=np.asarray(b["std"]))
        offsets = b.get("offsets")
        fleet = {
            "series_columns": list(b.get("series_columns") or []),
            "series_ids": [tuple(key) for key in b.get("series_ids") or []],
            "series_mean": None if b.get("series_mean") is None else np.asarray(b["series_mean"]),
            "series_std": None if b.get("series_std") is None else np.asarray(b["series_std"]),
            "static_columns": list(b.get("static_columns") or []),
            "static_values": [list(values) for values in b.get("static_values") or []],
        }
        return cls(
            net,
            scaler,
            list(b["inputs"]),
            list(b["targets"]),
            b["freq"],
            dict(b["net_args"]),
            [float(q) for q in b.get("levels", [])],
            None if offsets is None else offsets.numpy(),
            **fleet,
        )
