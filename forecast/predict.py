"""python -m forecast.predict: forecasts from a logged or registered model, written to a CSV.

    python -m forecast.predict                                        # models:/forecast@champion, the sample
    python -m forecast.predict data=csv data.path=drops/ output=next.csv
    python -m forecast.predict model_uri=models:/forecast/3 span=test output=backtest.csv

The data is read as training reads it (the `data` group: same CSV options, same repairs); the
model brings its lookback L, horizon H, columns and frequency, and the data must match them.
Without `span`, it writes the next H steps after the last reading: one row per future timestamp,
one column per target, in the data's units. With `span=test` (or train, val, all) it forecasts
from every complete window of that span, beside the actual values (a backtest).
Bad input ends with `error: ...` and exit status 2. Settings: conf/predict.yaml.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import hydra
import mlflow
import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from omegaconf import DictConfig, OmegaConf

from forecast import datasets, sample, serving, tracking
from forecast.errors import InputError, reported
from forecast.frame import CsvSpec, load_frame
from forecast.windows import split_rows, window_origins

OmegaConf.register_new_resolver("sample_csv", sample.default_path, replace=True)
OmegaConf.register_new_resolver("dataset_path", datasets.dataset_path, replace=True)   # data=etth1 ...: the fetched file
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")   # an unreachable server fails in seconds, not minutes


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with reported():
        predict(cfg)


def predict(cfg: DictConfig) -> pd.DataFrame:
    """Read the data, load the model, forecast, write `cfg.output`; returns what was written."""
    frame, freq = read(cfg.data)
    source = str(cfg.data.path)
    model, inner = serving.load(open_store(cfg.model_uri))
    inner.check(frame, freq, source)
    if cfg.span is None:
        readings = frame.iloc[-inner.lookback :][inner.inputs].reset_index()
        readings["timestamp"] = readings["timestamp"].astype(str)          # as the served model receives them
        out = model.predict(readings)
        summary = (f"{inner.horizon} steps every {inner.freq} from {out['timestamp'].iloc[0]} to {out['timestamp'].iloc[-1]}, "
                   f"after the reading of {frame.index[-1]}")
    else:
        out, summary = backtest(inner, frame, cfg)
    out.to_csv(cfg.output, index=False)
    print(f"wrote {cfg.output}: {summary}; {len(inner.targets)} targets ({', '.join(inner.targets)}) by {cfg.model_uri}")
    print(out.head(3).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return out


def read(data: DictConfig) -> tuple[pd.DataFrame, str]:
    """The data group's CSV settings -> the regular frame training would see, and its frequency."""
    settings = OmegaConf.to_container(data, resolve=True)
    spec = CsvSpec(**{f.name: settings[f.name] for f in dataclasses.fields(CsvSpec) if f.name in settings})
    frame, report = load_frame(spec)
    return frame, report.freq


def open_store(model_uri: str) -> str:
    """Point MLflow at the tracking store, refusing to create an empty one just to look a model up in it."""
    uri = tracking.tracking_uri()
    if model_uri.startswith(("models:", "runs:")) and uri == tracking.DEFAULT_URI and not Path("mlflow.db").is_file():
        raise InputError(f"no tracking store here ({Path.cwd() / 'mlflow.db'}) to find {model_uri} in.\n"
                         "Run from the folder you trained in, or set MLFLOW_TRACKING_URI.")
    mlflow.set_tracking_uri(uri)
    return model_uri


def window_forecasts(inner: serving.ForecastPyfunc, frame: pd.DataFrame, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forecasts and actual values [N, H, T] in data units from each origin t (inputs rows [t-L, t))."""
    values = frame[inner.inputs].to_numpy(dtype=np.float64)                            # [T, C]
    inputs = sliding_window_view(values, inner.lookback, axis=0)[origins - inner.lookback]   # [N, C, L]
    truth = sliding_window_view(frame[inner.targets].to_numpy(dtype=np.float64), inner.horizon, axis=0)[origins]  # [N, T, H]
    return inner.forecast_windows(inputs.transpose(0, 2, 1)), truth.transpose(0, 2, 1)


def backtest(inner: serving.ForecastPyfunc, frame: pd.DataFrame, cfg: DictConfig) -> tuple[pd.DataFrame, str]:
    """Forecasts from every complete window of `cfg.span`, one row per window and step, beside the actual values."""
    d = cfg.data
    spans = split_rows(len(frame), d.get("val_fraction", 0.1), d.get("test_fraction", 0.2), d.get("borders"))
    spans["all"] = (0, len(frame))
    if cfg.span not in spans:
        raise InputError(f"span={cfg.span!r} is not one of {', '.join(spans)} (or null for the next steps)")
    valid = ~np.isnan(frame[inner.inputs].to_numpy()).any(axis=1)
    origins = window_origins(spans[cfg.span], inner.lookback, inner.horizon, valid, int(cfg.stride))
    if len(origins) == 0:
        start, end = spans[cfg.span]
        raise InputError(f"the {cfg.span} span (rows {start}-{end}) holds no complete window of "
                         f"lookback {inner.lookback} + horizon {inner.horizon}; use span=all or a longer file")
    pred, truth = window_forecasts(inner, frame, origins)                              # [N, H, T] each
    n, h, _ = pred.shape
    rows = (origins[:, None] + np.arange(h)).ravel()                                   # [N*H] row of each forecast step
    out = pd.DataFrame({"last_reading": np.repeat(frame.index[origins - 1], h), "step": np.tile(np.arange(1, h + 1), n),
                        "timestamp": frame.index[rows]})
    for k, name in enumerate(inner.targets):
        out[name] = pred[:, :, k].ravel()
        out[f"{name}:actual"] = truth[:, :, k].ravel()
    mae = "  ".join(f"{name} {np.mean(np.abs(pred[:, :, k] - truth[:, :, k])):.4g}" for k, name in enumerate(inner.targets))
    summary = f"{n:,} windows x {h} steps of the {cfg.span} span ({frame.index[origins[0]]} to {frame.index[rows[-1]]}); MAE {mae}"
    return out, summary


if __name__ == "__main__":
    main()
