"""The trained model as MLflow serves it: a frame of raw readings in, the next H steps out.

`ForecastPyfunc` wraps a `Forecaster` (forecast/forecaster.py) loaded from its bundle artifact;
`load(uri)` opens any logged or registered forecast model and hands back both. Every input is
checked here, by the model itself (the model is logged without an input schema, so MLflow's own
schema errors never answer in its place): a bad payload raises `BadInput`, which
`python -m forecast.predict` reports as `error: ...` (exit 2) and `mlflow models serve` as HTTP 400
with the same one-line message; a forecast that is not finite is never returned.

A fleet model (trained with data=fleet) takes the readings of any number of devices in one
request, in long form with the id column(s), and answers every device's forecast in long form
(`predict_fleet` below).
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
        if f.series_columns:  # a fleet model: many devices per request
            return predict_fleet(f, model_input)
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


def table(model_input, f: Forecaster, minimum: int | None = None) -> pd.DataFrame:
    """The payload as a frame with the model's columns and at least `minimum` rows (default: `lookback`), or BadInput."""
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
    if len(frame) < (f.lookback if minimum is None else minimum):
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


# --- a fleet: many devices in one request


def predict_fleet(f: Forecaster, model_input) -> pd.DataFrame:
    """Readings of any number of devices (long form) -> every device's next H steps (long form).

    Input: one row per device and time with the model's id column(s) (`f.series_columns`), its input
    columns and, optionally, `timestamp`; a device's rows oldest first (devices may interleave); at
    least `lookback` rows per device, whose last `lookback` must be complete and one model step
    apart. A device seen in training is scaled with its training-span scaler; one the model never saw
    (cold start) is scaled on these readings themselves. A model with static columns
    (`f.static_columns`) reads each device's value from its latest row (a value not seen in training
    gets the mean vector); one with calendar features (model.calendar) needs `timestamp`, whose
    wall-clock time gives them. Output: H rows per device, in the order the
    devices first appear: the id column(s), `timestamp` (or `step`), one column per target.
    Any bad row raises BadInput naming the device, the column and the row (rows counted from 1).
    """
    frame = table(model_input, f, minimum=1)
    ids = list(f.series_columns)
    missing = [c for c in ids if c not in frame.columns]
    if missing:
        raise BadInput(
            f"model input lacks the id column(s) {', '.join(missing)}: this model forecasts a fleet; send each reading "
            f"with its {', '.join(ids)} (long form: {', '.join(ids)}, {TIME}, {', '.join(f.inputs)})"
        )
    keys = frame[ids].astype("string").apply(lambda c: c.str.strip())  # as ingestion reads ids: text, stripped
    empty = keys.isna() | (keys == "")
    if empty.any(axis=None):
        k = int(np.flatnonzero(empty.any(axis=1).to_numpy())[0])
        raise BadInput(f"model input row {k + 1} has no {', '.join(c for c in ids if empty[c].iloc[k])}; every reading needs its device")
    codes, first = pd.MultiIndex.from_frame(keys).factorize()  # [rows] device number, in order of first appearance
    counts = np.bincount(codes, minlength=len(first))
    short = np.flatnonzero(counts < f.lookback)
    if len(short):
        d = int(short[0])
        more = f" (and {len(short) - 1:,} other device(s))" if len(short) > 1 else ""
        raise BadInput(
            f"model input has {counts[d]} rows for device {shown_id(first[d])}{more}; the model needs its last {f.lookback} readings"
        )
    order = np.argsort(codes, kind="stable")  # rows of each device together, in the order sent
    ends = np.cumsum(counts)
    window = (ends[:, None] - f.lookback + np.arange(f.lookback)).ravel()  # [D*L] positions in `order` of each device's last L rows
    at = order[window].reshape(len(first), f.lookback)  # [D, L] row of the request
    stamps = fleet_timestamps(frame[TIME], at, first, f.freq) if TIME in frame.columns else None  # [D, L] or None
    raw = fleet_readings(frame, f, at, first, stamps)  # [D, L, C]
    index = f.series_index(list(first))  # [D] device number in training, -1: never seen
    scaler = f.series_scaler(index, list(raw))  # [D, 1, C]
    check_scale(raw, scaler, f, at, first)
    pred = f.forecast(raw, scaler=scaler, series=index, **fleet_features(frame, f, at, first, stamps))  # [D, H, T]
    bad = np.flatnonzero(~np.isfinite(pred).all(axis=(1, 2)))
    if len(bad):
        raise BadInput(
            f"the forecast for device {shown_id(first[int(bad[0])])} is not finite: "
            "its readings lie far outside what the model was trained on"
        )
    h = f.horizon
    out = pd.DataFrame({name: np.repeat(np.asarray(first.get_level_values(i)), h) for i, name in enumerate(ids)})
    if stamps is not None:
        step = pd.Timedelta(to_offset(f.freq))
        out[TIME] = (stamps[:, -1:] + step * np.arange(1, h + 1)).ravel()
    else:
        out["step"] = np.tile(np.arange(1, h + 1), len(first))
    for k, name in enumerate(f.targets):
        out[name] = pred[:, :, k].ravel()
    return out


def fleet_features(frame: pd.DataFrame, f: Forecaster, at: np.ndarray, first: pd.MultiIndex, stamps: np.ndarray | None) -> dict:
    """`Forecaster.forecast`'s calendar and static inputs for each device, for a model that reads them (else {}), or BadInput."""
    inputs = {}
    if "origin" in f.uses:
        if stamps is None:
            raise BadInput(f"this model uses calendar features: send each reading's {TIME} (ISO times such as 2025-03-09 11:30:00)")
        step = pd.Timedelta(to_offset(f.freq)).to_timedelta64()
        inputs["origin"] = (stamps[:, -1] + step).astype("datetime64[ns]").astype(np.int64)  # [D] wall-clock ns of the first forecast step
    if "static" in f.uses:
        missing = [c for c in f.static_columns if c not in frame.columns]
        if missing:
            raise BadInput(f"model input lacks the static column(s) {', '.join(missing)} the model reads; send each device's value")
        latest = frame[f.static_columns].iloc[at[:, -1]]  # [D, S] each device's value on its latest row
        empty = latest.isna() | (latest.astype("string").apply(lambda c: c.str.strip()) == "")
        if empty.any(axis=None):
            d = int(np.flatnonzero(empty.any(axis=1).to_numpy())[0])
            name = next(c for c in f.static_columns if empty[c].iloc[d])
            raise BadInput(f"model input row {at[d, -1] + 1} has no {name} for device {shown_id(first[d])}; send it on its latest row")
        inputs["static"] = f.static_codes(latest.astype(str).to_numpy())  # [D, S], -1: a value never seen in training
    return inputs


def shown_id(key) -> str:
    return "/".join(map(str, key)) if isinstance(key, tuple) else str(key)


def fleet_timestamps(column: pd.Series, at: np.ndarray, first: pd.MultiIndex, freq: str) -> np.ndarray:
    """[D, L] each device's window timestamps (datetime64), one model step apart, or BadInput naming the device and row."""
    parsed = timestamps_parsed(column)
    window = parsed[at.ravel()].reshape(at.shape)  # [D, L]
    unparsed = np.isnat(window)
    if unparsed.any():
        d, k = (int(v[0]) for v in np.nonzero(unparsed))
        raise BadInput(
            f"model input {TIME} in row {at[d, k] + 1} (device {shown_id(first[d])}) is {column.iloc[at[d, k]]!r}, not a date and time; "
            "send ISO times such as 2025-03-09 11:30:00"
        )
    step = pd.Timedelta(to_offset(freq)).to_timedelta64()
    wrong = np.diff(window, axis=1) != step  # [D, L-1]
    if wrong.any():
        d, k = (int(v[0]) for v in np.nonzero(wrong))
        raise BadInput(
            f"model input {TIME} in row {at[d, k + 1] + 1} is {pd.Timestamp(window[d, k + 1])} after {pd.Timestamp(window[d, k])} for "
            f"device {shown_id(first[d])}; each device's last rows must be consecutive readings every {freq}, oldest first"
        )
    return window


def timestamps_parsed(column: pd.Series) -> np.ndarray:
    """Every stamp of the column as datetime64[ns] (NaT where it is not a date and time)."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return pd.DatetimeIndex(column).tz_localize(None).to_numpy("datetime64[ns]")
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return np.full(len(column), np.datetime64("NaT"), "datetime64[ns]")  # numbers are not dates and times
    text = column.astype("string")
    if column.dtype == object:  # numbers among the strings (a JSON payload) are not dates and times either
        text = text.where(~column.map(lambda v: isinstance(v, (int, float, np.number))))
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
    return pd.DatetimeIndex(parsed).tz_localize(None).to_numpy("datetime64[ns]")


def fleet_readings(frame: pd.DataFrame, f: Forecaster, at: np.ndarray, first: pd.MultiIndex, stamps: np.ndarray | None) -> np.ndarray:
    """[D, L, C] each device's window of input columns as finite float64 values, or BadInput naming the device, column and row."""

    def where(d: int, k: int) -> str:
        when = f"{pd.Timestamp(stamps[d, k])} (row {at[d, k] + 1})" if stamps is not None else f"row {at[d, k] + 1}"
        return f"{when} for device {shown_id(first[d])}"

    raw = np.empty((*at.shape, len(f.inputs)))  # [D, L, C]
    for c, name in enumerate(f.inputs):
        column = frame[name]
        if pd.api.types.is_bool_dtype(column) or (column.dtype == object and column.map(lambda v: isinstance(v, (bool, np.bool_))).any()):
            raise BadInput(f"model input column {name} holds true/false values; send numbers")
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)  # [rows]
        unparsed = np.flatnonzero(np.isnan(values) & column.notna().to_numpy())
        if len(unparsed):
            k = int(unparsed[0])
            raise BadInput(f"model input column {name} in row {k + 1} holds {column.iloc[k]!r}, not a number")
        raw[:, :, c] = values[at]
        gaps = np.isnan(raw[:, :, c])  # [D, L]
        if gaps[:, -1].any():  # a device's latest reading of this column is missing
            d = int(np.flatnonzero(gaps[:, -1])[0])
            valid = np.flatnonzero(~gaps[d])
            since = f"its last reading in these rows is at {where(d, int(valid[-1]))}" if len(valid) else "it has no reading in these rows"
            raise BadInput(
                f"model input column {name} is missing its most recent readings for device {shown_id(first[d])} ({since}); "
                "a forecast must start from the last row: send complete rows"
            )
        if gaps.any():
            d, k = (int(v[0]) for v in np.nonzero(gaps))
            raise BadInput(f"model input column {name} is missing at {where(d, k)}; each device's last {f.lookback} rows must be complete")
        infinite = ~np.isfinite(raw[:, :, c])
        if infinite.any():
            d, k = (int(v[0]) for v in np.nonzero(infinite))
            raise BadInput(f"model input column {name} holds {raw[d, k, c]} at {where(d, k)}; readings must be finite")
    return raw


def check_scale(raw: np.ndarray, scaler, f: Forecaster, at: np.ndarray, first: pd.MultiIndex) -> None:
    """BadInput when a reading standardised by its device's scaler overflows the network's float32."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        scaled = np.abs((raw - scaler.mean) / scaler.std)  # [D, L, C]
    far = np.argwhere(~(scaled < FLOAT32_MAX))
    if len(far):
        d, k, c = (int(v) for v in far[0])
        raise BadInput(
            f"model input column {f.inputs[c]} holds {raw[d, k, c]:.4g} in row {at[d, k] + 1} for device {shown_id(first[d])}, "
            f"beyond any scale the model computes in (its mean {scaler.mean[d, 0, c]:.4g}, std {scaler.std[d, 0, c]:.4g})"
        )
