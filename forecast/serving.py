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
from mlflow.exceptions import MlflowException
from pandas.tseries.frequencies import to_offset

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


def load(model_uri: str) -> tuple[mlflow.pyfunc.PyFuncModel, "ForecastPyfunc"]:
    """A logged forecast model by URI (models:/forecast@champion, runs:/<id>/model, a folder) and its wrapper.

    Raises InputError, naming the URI, when it cannot be loaded or is not a forecast model.
    """
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise InputError(f"cannot load the model {model_uri}: {first}\n"
                         "Promote one with python -m forecast.retrain, or pass model_uri=runs:/<run id>/model.") from None
    inner = model.unwrap_python_model()
    if not hasattr(inner, "forecast_windows"):
        raise InputError(f"{model_uri} is not a forecast model of this version of the package (retrain it)")
    return model, inner


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
        out = pd.DataFrame(self.forecast_windows(raw[None])[0], columns=self.targets)
        if TIME in frame.columns:
            last = pd.Timestamp(pd.to_datetime(frame[TIME]).iloc[-1])
            out.insert(0, TIME, pd.date_range(last, periods=self.horizon + 1, freq=self.freq)[1:])
        else:
            out.insert(0, "step", np.arange(1, self.horizon + 1))
        return out

    def check(self, frame: pd.DataFrame, freq: str, source: str) -> None:
        """Raise InputError unless `frame` (a regular series at `freq`) has this model's columns and frequency."""
        missing = [c for c in self.inputs if c not in frame.columns]
        if missing:
            raise InputError(f"{source} lacks column(s) {', '.join(missing)} that the model reads; it has {', '.join(frame.columns)}.\n"
                             f"The model needs {', '.join(self.inputs)}: point data.path at that kind of data or use another model.")
        if to_offset(freq) != to_offset(self.freq):
            raise InputError(f"{source} has a reading every {freq} but the model was trained on one every {self.freq}.\n"
                             f"Resample it with data.freq={self.freq}, or use a model trained at {freq}.")
        if len(frame) < self.lookback:
            raise InputError(f"{source} has {len(frame)} rows every {freq}; the model needs at least the last {self.lookback} readings")

    def forecast_windows(self, raw: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Raw input windows [N, L, C] (columns in `inputs` order) -> forecasts [N, H, T] in data units.

        The batched core of `predict`, used to backtest or compare models on the same windows.
        """
        t = list(range(len(self.targets)))                                          # targets lead the inputs
        out = []
        for start in range(0, len(raw), batch_size):
            x = torch.as_tensor((raw[start : start + batch_size] - self.mean) / self.std, dtype=torch.float32)
            with torch.no_grad():
                out.append(self.net(x).numpy().astype(np.float64))                 # [b, H, T]
        return np.concatenate(out) * self.std[t] + self.mean[t]
