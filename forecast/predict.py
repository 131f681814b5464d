"""python -m forecast.predict: forecasts from a logged or registered model, written to a CSV.

    python -m forecast.predict                                        # models:/forecast@champion, the sample
    python -m forecast.predict data=csv data.path=drops/ output=next.csv
    python -m forecast.predict model_uri=models:/forecast/3 span=test output=backtest.csv

The data is read as training reads it (the `data` group: same CSV options, same repairs); the
model brings its lookback L, horizon H, columns and frequency, and the data must match them.
Without `span`, it writes the next H steps after the last reading: one row per future timestamp,
one column per target, in the data's units (a quantile model adds `<target>:q<level>` after each,
e.g. `power_kw:q0.1`; the bare column is the median), and `last_reading`, the origin the forecast starts
after. That origin is the end of the data: when a sensor's latest readings are missing it is an
error naming the sensor, unless allow_stale=true accepts the earlier origin (and says so).
A fleet (data=fleet and a model trained on one): every device's next H steps in long form,
forecast/predict_fleet.py. With `span=test` (or train, val, all) it forecasts
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
from omegaconf import DictConfig, OmegaConf

from forecast import config, predict_fleet, pyfunc, scoring, tracking
from forecast.errors import InputError, reported
from forecast.forecaster import Forecaster
from forecast.frame import CsvSpec, DataReport, load_frame
from forecast.quantiles import label
from forecast.windows import split_rows, window_origins

config.register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # an unreachable server fails in seconds, not minutes
    with reported():
        predict(cfg)


def predict(cfg: DictConfig) -> pd.DataFrame:
    """Read the data, load the model, forecast, write `cfg.output`; returns what was written."""
    output = check_output(cfg.output)
    if cfg.span is None and not isinstance(cfg.allow_stale, bool):
        raise InputError(f"allow_stale={cfg.allow_stale!r}: give true or false")
    if predict_fleet.is_fleet(cfg.data):
        return fleet(cfg, output)
    frame, report = read(cfg.data)
    source = str(cfg.data.path)
    model, forecaster = pyfunc.load(open_store(cfg.model_uri))
    if forecaster.series_columns:
        ids = ",".join(forecaster.series_columns)
        raise InputError(f"{cfg.model_uri} forecasts a fleet: read {source} with data=fleet data.series_column=[{ids}]")
    forecaster.check(frame, report.freq, source)
    if cfg.span is None:
        stale = stale_note(cfg.data, frame, forecaster.inputs, cfg.allow_stale) if sum(report.rows_dropped.values()) else ""
        readings = frame.iloc[-forecaster.lookback :][forecaster.inputs].reset_index()
        readings["timestamp"] = readings["timestamp"].astype(str)  # as the served model receives them
        out = model.predict(readings)
        out.insert(0, "last_reading", frame.index[-1])  # the origin: the forecast starts after it
        summary = (
            f"{forecaster.horizon} steps every {forecaster.freq} from {out['timestamp'].iloc[0]} to {out['timestamp'].iloc[-1]}, "
            f"after the reading of {frame.index[-1]}{stale}"
        )
    else:
        out, summary = backtest(forecaster, frame, cfg)
    out.to_csv(output, index=False)
    print(f"wrote {cfg.output}: {summary}; {len(forecaster.targets)} targets ({', '.join(forecaster.targets)}) by {cfg.model_uri}")
    print(out.head(3).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return out


def fleet(cfg: DictConfig, output: Path) -> pd.DataFrame:
    """Every device's next H steps (forecast/predict_fleet.py), written to `output`."""
    if cfg.span is not None:
        raise InputError(
            f"span={cfg.span}: a fleet's backtest is its training run's evaluation (evaluation/test_by_series.parquet);\n"
            "predict forecasts the next steps of every device: leave span=null."
        )
    model, forecaster = pyfunc.load(open_store(cfg.model_uri))
    source = str(cfg.data.path)
    out, summary = predict_fleet.forecast_fleet(model, forecaster, predict_fleet.read_fleet(cfg.data, forecaster), cfg.allow_stale, source)
    out.to_csv(output, index=False)
    print(f"wrote {cfg.output}: {summary}; {len(forecaster.targets)} targets ({', '.join(forecaster.targets)}) by {cfg.model_uri}")
    print(out.head(3).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return out


def check_output(output) -> Path:
    """The `output` setting as a path whose folder exists and is writable (InputError naming the setting otherwise)."""
    path = Path(str(output))
    folder = path.parent
    if not str(output).strip() or path.is_dir():
        raise InputError(f"output={output}: name the CSV file to write, e.g. output=forecast.csv")
    if not folder.is_dir():
        raise InputError(f"output={output}: the folder {folder} does not exist; create it or choose another output")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"output={output}: {path if path.exists() else folder} is not writable; choose another output")
    return path


def stale_note(data: DictConfig, frame: pd.DataFrame, inputs: list[str], allow_stale: bool) -> str:
    """Where the forecast starts when the data's latest readings are incomplete ('' when they are not).

    Ingestion drops incomplete rows at the end of the data, so a sensor whose most recent readings
    are missing would silently move the forecast's start into the past: an InputError names the
    sensor and its last reading, unless `allow_stale` accepts the earlier start (then said here).
    """
    last = last_readings(data, frame, inputs)
    end = max(last.values())
    if end <= frame.index[-1]:
        return ""
    behind = {name: t for name, t in last.items() if t < end}
    names = ", ".join(f"{name} (last reading {t})" for name, t in behind.items())
    if not allow_stale:
        raise InputError(
            f"the data ends at {end} but {names} stopped earlier: a forecast would start at {frame.index[-1]}, in the past.\n"
            f"Fill in the missing readings, or set allow_stale=true to forecast from {frame.index[-1]} anyway."
        )
    return f" (allow_stale: the data ends at {end}, but {names} stopped earlier)"


def last_readings(data: DictConfig, frame: pd.DataFrame, inputs: list[str]) -> dict[str, pd.Timestamp]:
    """Each input column's last reading, as ingestion sees the column on its own (before dropping incomplete end rows)."""
    out = {}
    for name in inputs:
        settings = OmegaConf.merge(data, {"targets": [name], "covariates": []})
        try:
            out[name] = read(settings)[0].index[-1]
        except InputError:  # the column alone does not make a series: it ends where the frame ends
            out[name] = frame.index[-1]
    return out


def read(data: DictConfig) -> tuple[pd.DataFrame, DataReport]:
    """The data group's CSV settings -> the regular frame training would see, and what ingestion did."""
    settings = OmegaConf.to_container(data, resolve=True)
    spec = CsvSpec(**{f.name: settings[f.name] for f in dataclasses.fields(CsvSpec) if f.name in settings})
    return load_frame(spec)


def open_store(model_uri: str) -> str:
    """Point MLflow at the tracking store, refusing to create an empty one just to look a model up in it."""
    uri = tracking.tracking_uri()
    if model_uri.startswith(("models:", "runs:")) and uri == tracking.DEFAULT_URI and not Path("mlflow.db").is_file():
        raise InputError(
            f"no tracking store here ({Path.cwd() / 'mlflow.db'}) to find {model_uri} in.\n"
            "Run from the folder you trained in, or set MLFLOW_TRACKING_URI."
        )
    mlflow.set_tracking_uri(uri)
    return model_uri


def backtest(forecaster: Forecaster, frame: pd.DataFrame, cfg: DictConfig) -> tuple[pd.DataFrame, str]:
    """Forecasts from every complete window of `cfg.span`, one row per window and step, beside the actual values."""
    d = cfg.data
    spans = split_rows(len(frame), d.get("val_fraction", 0.1), d.get("test_fraction", 0.2), d.get("borders"))
    spans["all"] = (0, len(frame))
    if cfg.span not in spans:
        raise InputError(f"span={cfg.span!r} is not one of {', '.join(spans)} (or null for the next steps)")
    valid = ~np.isnan(frame[forecaster.inputs].to_numpy()).any(axis=1)
    origins = window_origins(spans[cfg.span], forecaster.lookback, forecaster.horizon, valid, int(cfg.stride))
    if len(origins) == 0:
        start, end = spans[cfg.span]
        raise InputError(
            f"the {cfg.span} span (rows {start}-{end}) holds no complete window of "
            f"lookback {forecaster.lookback} + horizon {forecaster.horizon}; use span=all or a longer file"
        )
    inputs, actual = forecaster.windows(frame, origins)  # [N, L, C], [N, H, T]
    pred = forecaster.forecast(inputs)  # [N, H, T]
    bands = forecaster.forecast_quantiles(inputs) if forecaster.levels else None  # [N, H, T, Q]
    n, h, _ = pred.shape
    rows = (origins[:, None] + np.arange(h)).ravel()  # [N*H] row of each forecast step
    out = pd.DataFrame(
        {"last_reading": np.repeat(frame.index[origins - 1], h), "step": np.tile(np.arange(1, h + 1), n), "timestamp": frame.index[rows]}
    )
    for k, name in enumerate(forecaster.targets):
        out[name] = pred[:, :, k].ravel()
        for j, q in enumerate(forecaster.levels):
            out[f"{name}:q{label(q)}"] = bands[:, :, k, j].ravel()
        out[f"{name}:actual"] = actual[:, :, k].ravel()
    std = forecaster.scaler.std[forecaster.target_index]
    mae = scoring.score(pred, actual, std, axis=(0, 1))["mae"]  # [T]
    mae = "  ".join(f"{name} {v:.4g}" for name, v in zip(forecaster.targets, mae))
    summary = f"{n:,} windows x {h} steps of the {cfg.span} span ({frame.index[origins[0]]} to {frame.index[rows[-1]]}); MAE {mae}"
    if bands is not None:
        scores = scoring.score_quantiles(bands, forecaster.levels, actual, std)
        summary += "; " + " ".join(f"{k} {v:.4g}" for k, v in scores.items() if k == "crps" or k.startswith("coverage_"))
    return out, summary


if __name__ == "__main__":
    main()
