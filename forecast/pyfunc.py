"""The trained model as MLflow serves it: a frame of raw readings in, the next H steps out.

`ForecastPyfunc` wraps a `Forecaster` (forecast/forecaster.py) loaded from its bundle artifact;
`load(uri)` opens any logged or registered forecast model and hands back both. Every input is
checked here, by the model itself (the model is logged without an input schema, so MLflow's own
schema errors never answer in its place): a bad payload raises `BadInput`, which
`python -m forecast.predict` reports as `error: ...` (exit 2) and `mlflow models serve` as HTTP 400
with the same one-line message; a forecast that is not finite is never returned.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST
from pandas.tseries.frequencies import to_offset

from forecast.errors import InputError
from forecast.forecaster import Forecaster
from forecast.quantiles import label

TIME = "timestamp"
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the network computes in float32


class BadInput(InputError, MlflowException):
    """A payload the model refuses: exit 2 in `forecast.predict`, HTTP 400 from `mlflow models serve`.

    MLflow's scoring server answers an MlflowException with its error code (BAD_REQUEST: 400) and
    message, without a stack trace; it first rewrites `message` to prefix the whole payload
    ("Failed to predict data '<frame>'"). This class keeps its own message, so that the body holds
    the project's one line and nothing of the request or the server.
    """

    def __init__(self, message: str):
        MlflowException.__init__(self, message, error_code=BAD_REQUEST)

    @property
    def message(self) -> str:
        return str(self.args[0])

    @message.setter
    def message(self, value: str) -> None:
        pass  # the scoring server's rewrite; see the class docstring


def load(model_uri: str) -> tuple[mlflow.pyfunc.PyFuncModel, Forecaster]:
    """A logged forecast model by URI (models:/forecast@champion, runs:/<id>/model, a folder) and its Forecaster.

    Raises InputError, naming the URI, when it cannot be loaded or is not a forecast model.
    """
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise InputError(
            f"cannot load the model {model_uri}: {first}\n"
            "Promote one with python -m forecast.retrain, or pass model_uri=runs:/<run id>/model."
        ) from None
    forecaster = getattr(model.unwrap_python_model(), "forecaster", None)
    if not isinstance(forecaster, Forecaster):
        raise InputError(f"{model_uri} is not a forecast model of this version of the package (retrain it)")
    return model, forecaster


class ForecastPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: a frame of the latest raw readings -> the next H steps of every target.

    Input: at least `lookback` rows with one column per input sensor and, optionally, a `timestamp`
    column of ISO strings (as read from a CSV) one model step apart; the last `lookback` rows are
    used and must be complete, finite numbers. Output: H rows, one column per target in the data's
    units, plus `timestamp` (continuing the input's stamps at the model's frequency) when the input
    had one, else `step` (1..H). A quantile model adds, after each target, one column per level,
    `<target>:q<level>` (`power_kw:q0.1`); the bare target column is the median. The forecast starts
    right after the input's last row.
    """

    def load_context(self, context) -> None:
        self.forecaster = Forecaster.load(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        f = self.forecaster
        frame = table(model_input, f)
        window = frame.iloc[-f.lookback :]
        first_row = len(frame) - f.lookback + 1  # rows are counted from 1
        stamps = timestamps(window[TIME], first_row, f.freq) if TIME in window.columns else None
        raw = readings(window, f, first_row, stamps)  # [L, C]
        pred = f.forecast(raw[None])[0]  # [H, T]
        bands = f.forecast_quantiles(raw[None])[0] if f.levels else np.empty((f.horizon, len(f.targets), 0))  # [H, T, Q]
        if not (np.isfinite(pred).all() and np.isfinite(bands).all()):
            raise BadInput(
                f"the forecast from these readings is not finite: they lie far outside the training data "
                f"(means {dict(zip(f.inputs, np.round(f.scaler.mean, 3)))})"
            )
        out = pd.DataFrame(
            {
                column: values
                for k, name in enumerate(f.targets)
                for column, values in [(name, pred[:, k])] + [(f"{name}:q{label(q)}", bands[:, k, j]) for j, q in enumerate(f.levels)]
            }
        )
        if stamps is not None:
            out.insert(0, TIME, pd.date_range(stamps[-1], periods=f.horizon + 1, freq=f.freq)[1:])
        else:
            out.insert(0, "step", np.arange(1, f.horizon + 1))
        return out


def table(model_input, f: Forecaster) -> pd.DataFrame:
    """The payload as a frame with the model's columns and at least `lookback` rows, or BadInput."""
    try:
        frame = pd.DataFrame(model_input)
    except (ValueError, TypeError) as e:
        raise BadInput(
            f"model input is not a table of readings ({str(e).splitlines()[0]}); send columns {', '.join(f.inputs)} and {TIME}"
        ) from None
    if len(frame) == 0:
        raise BadInput(f"model input is empty; send the last {f.lookback} readings of {', '.join(f.inputs)} with their {TIME}")
    twice = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if twice:
        raise BadInput(f"model input has column(s) {', '.join(twice)} more than once")
    missing = [c for c in f.inputs if c not in frame.columns]
    if missing:
        raise BadInput(f"model input lacks column(s) {', '.join(missing)}; it needs {', '.join(f.inputs)}")
    if len(frame) < f.lookback:
        raise BadInput(f"model input has {len(frame)} rows; the model needs the last {f.lookback} readings")
    return frame


def timestamps(column: pd.Series, first_row: int, freq: str) -> pd.DatetimeIndex:
    """The window's timestamps, parsed, one model step apart and increasing, or BadInput naming the row."""
    if pd.api.types.is_datetime64_any_dtype(column):
        parsed = pd.DatetimeIndex(column)
    else:
        text = column.astype("string")
        numeric = ~column.isna() & column.map(lambda v: isinstance(v, (int, float, np.number)) and not isinstance(v, bool))
        try:
            parsed = pd.DatetimeIndex(pd.to_datetime(text.where(~numeric), format="ISO8601", errors="coerce"))
        except (ValueError, TypeError) as e:
            raise BadInput(f"model input {TIME}: {str(e).splitlines()[0]}; send ISO times such as 2025-03-09 11:30:00") from None
        if parsed.isna().any():
            k = int(np.argmax(parsed.isna()))
            raise BadInput(
                f"model input {TIME} in row {first_row + k} is {column.iloc[k]!r}, not a date and time; "
                "send ISO times such as 2025-03-09 11:30:00"
            )
    following = parsed[:-1] + to_offset(freq)
    wrong = np.flatnonzero(following != parsed[1:])
    if len(wrong):
        k = int(wrong[0]) + 1
        raise BadInput(
            f"model input {TIME} in row {first_row + k} is {parsed[k]} after {parsed[k - 1]}; the last rows must be "
            f"consecutive readings every {freq}, oldest first"
        )
    return parsed


def readings(window: pd.DataFrame, f: Forecaster, first_row: int, stamps: pd.DatetimeIndex | None) -> np.ndarray:
    """The window's input columns as finite float64 values [L, C], or BadInput naming the column and row."""
    where = (lambda k: f"{stamps[k]} (row {first_row + k})") if stamps is not None else (lambda k: f"row {first_row + k}")
    columns = []
    for name in f.inputs:
        column = window[name]
        if column.map(lambda v: isinstance(v, (bool, np.bool_))).any():
            raise BadInput(f"model input column {name} holds true/false values; send numbers")
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)  # [L]
        unparsed = np.flatnonzero(np.isnan(values) & column.notna().to_numpy())
        if len(unparsed):
            k = int(unparsed[0])
            raise BadInput(f"model input column {name} in row {first_row + k} holds {column.iloc[k]!r}, not a number")
        columns.append(values)
    raw = np.stack(columns, axis=1)  # [L, C]
    for c, name in enumerate(f.inputs):
        gaps = np.flatnonzero(np.isnan(raw[:, c]))
        if len(gaps) and gaps[-1] == len(raw) - 1:  # the latest readings are missing
            valid = np.flatnonzero(~np.isnan(raw[:, c]))
            since = f"its last reading in these rows is at {where(int(valid[-1]))}" if len(valid) else "it has no reading in these rows"
            raise BadInput(
                f"model input column {name} is missing its most recent readings ({since}); "
                "a forecast must start from the last row: send complete rows"
            )
        if len(gaps):
            raise BadInput(f"model input column {name} is missing at {where(int(gaps[0]))}; the last {f.lookback} rows must be complete")
        infinite = np.flatnonzero(~np.isfinite(raw[:, c]))
        if len(infinite):
            raise BadInput(f"model input column {name} holds {raw[infinite[0], c]} at {where(int(infinite[0]))}; readings must be finite")
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = np.abs(f.scaler.transform(raw, np.float64))  # [L, C] training standard deviations
    far = np.argwhere(~(scaled < FLOAT32_MAX))
    if len(far):
        k, c = (int(v) for v in far[0])
        raise BadInput(
            f"model input column {f.inputs[c]} holds {raw[k, c]:.4g} at {where(k)}, beyond any scale the model computes in "
            f"(training mean {f.scaler.mean[c]:.4g}, std {f.scaler.std[c]:.4g})"
        )
    return raw
