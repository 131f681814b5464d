"""The trained model as MLflow serves it: raw readings in, forecasts in the data's units out.

A bundle (one torch file) carries everything a forecast needs: the network's arguments and
weights, the scaler, the input and target column names, L, H and the frequency. The pyfunc
wrapper loads it on a CPU with nothing but the model's URI.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from forecast.errors import InputError
from forecast.networks import build_network

TIME = "timestamp"


def save_bundle(path: Path, net: torch.nn.Module, net_args: dict, scaler, inputs: list[str], targets: list[str], freq: str) -> Path:
    """Write the self-contained model file that the pyfunc wrapper loads."""
    torch.save(
        {
            "net_args": net_args,
            "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "mean": [float(v) for v in scaler.mean], "std": [float(v) for v in scaler.std],
            "inputs": list(inputs), "targets": list(targets), "freq": freq,
        },
        path,
    )
    return path


class ForecastPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: a frame of the latest raw readings -> the next H steps of every target.

    Input: at least `lookback` rows with one column per input sensor and a `timestamp` column of
    ISO strings (as read from a CSV); the last `lookback` rows are used. Output: H rows, one column per target in the
    data's units, plus `timestamp` (continuing the input's stamps at the model's frequency) when
    the input had one, else `step` (1..H).
    """

    def load_context(self, context) -> None:
        self.load(context.artifacts["bundle"])

    def load(self, path: str) -> "ForecastPyfunc":
        b = torch.load(path, map_location="cpu", weights_only=True)
        self.net = build_network(**b["net_args"])
        self.net.load_state_dict(b["state_dict"])
        self.net.eval()
        self.inputs, self.targets, self.freq = b["inputs"], b["targets"], b["freq"]
        self.mean, self.std = np.asarray(b["mean"]), np.asarray(b["std"])
        self.lookback, self.horizon = self.net.lookback, self.net.horizon
        return self

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        missing = [c for c in self.inputs if c not in frame.columns]
        if missing:
            raise InputError(f"model input lacks column(s) {', '.join(missing)}; it needs {', '.join(self.inputs)}")
        if len(frame) < self.lookback:
            raise InputError(f"model input has {len(frame)} rows; the model needs the last {self.lookback} readings")
        raw = frame[self.inputs].to_numpy(dtype=np.float64)[-self.lookback :]      # [L, C]
        if np.isnan(raw).any():
            raise InputError("model input has missing values in its last lookback rows; fill or drop them first")
        x = torch.as_tensor((raw - self.mean) / self.std, dtype=torch.float32)[None]  # [1, L, C]
        with torch.no_grad():
            y = self.net(x)[0].numpy().astype(np.float64)                          # [H, T]
        t = list(range(len(self.targets)))                                          # targets lead the inputs
        out = pd.DataFrame(y * self.std[t] + self.mean[t], columns=self.targets)
        if TIME in frame.columns:
            last = pd.Timestamp(pd.to_datetime(frame[TIME]).iloc[-1])
            out.insert(0, TIME, pd.date_range(last, periods=self.horizon + 1, freq=self.freq)[1:])
        else:
            out.insert(0, "step", np.arange(1, self.horizon + 1))
        return out
