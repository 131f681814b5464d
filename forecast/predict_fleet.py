"""`python -m forecast.predict data=fleet ...`: the next H steps of every device of a fleet, in long form.

    python -m forecast.predict data=fleet data.path=latest.csv output=next.csv
    python -m forecast.predict data=fleet data.path=meters/ model_uri=models:/fleet@champion output=next.csv

The data is read as a fleet training reads it (`forecast.fleet.load_fleet`: every device regular on
its own span, the same repairs), with the model's columns; each device's last `lookback` readings
go to the model in one request, as the served model receives them (`forecast.pyfunc.predict_fleet`):
a device seen in training is scaled with its own training-span scaler, one the model never saw
(cold start) on those readings. The output has, per device, H rows: its id column(s),
`last_reading` (the device's last timestamp: its forecast starts right after it), `timestamp` and
one column per target.

A device whose last `lookback` steps are not complete (an outage longer than data.max_gap, or a
reading missing at the end), or whose readings stop more than a horizon before the fleet's last
reading, would be forecast from stale or partial data: that is an error naming the devices, unless
allow_stale=true, which leaves the incomplete ones out and forecasts the others from their own
last reading (and says so). Devices ingestion leaves out (another step, or fewer than lookback
steps) are named too.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from pandas.tseries.frequencies import to_offset

from forecast import pyfunc
from forecast.errors import InputError
from forecast.fleet import Fleet, load_fleet, series_columns
from forecast.forecaster import Forecaster
from forecast.frame import CsvSpec

NAMED = 5  # devices named in a message before a count


def is_fleet(data: DictConfig) -> bool:
    """Whether the data group reads a fleet (data=fleet: it has data.series_column)."""
    return "series_column" in data


def read_fleet(data: DictConfig, f: Forecaster) -> Fleet:
    """The fleet as training reads it, with the model's columns; every device with at least `lookback` steps."""
    settings = OmegaConf.to_container(data, resolve=True)
    read = {k: settings[k] for k in (field.name for field in dataclasses.fields(CsvSpec)) if k in settings}
    read |= {"targets": list(f.targets), "covariates": [c for c in f.inputs if c not in f.targets]}
    ids = series_columns(settings["series_column"])
    if len(ids) != len(f.series_columns):
        raise InputError(
            f"data.series_column={settings['series_column']!r} names {len(ids)} id column(s) but the model's devices are identified by "
            f"{', '.join(f.series_columns)}.\nSet data.series_column=[{','.join(f.series_columns)}]."
        )
    fleet = load_fleet(CsvSpec(**read), ids, f.lookback, static_columns=f.static_columns)
    if to_offset(fleet.freq) != to_offset(f.freq):
        raise InputError(
            f"'{data.path}' has a reading every {fleet.freq} but the model was trained on one every {f.freq}.\n"
            f"Resample it with data.freq={f.freq}, or use a model trained at {fleet.freq}."
        )
    return fleet


def named(fleet: Fleet, devices: np.ndarray, what=lambda d: "") -> str:
    shown = ", ".join(f"{'/'.join(map(str, fleet.ids.iloc[d]))}{what(d)}" for d in devices[:NAMED])
    return shown + (f" and {len(devices) - NAMED:,} more" if len(devices) > NAMED else "")


def forecast_fleet(model, f: Forecaster, fleet: Fleet, allow_stale: bool, source: str) -> tuple[pd.DataFrame, str]:
    """Every device's next H steps through the served model; the output and a one-line summary."""
    if not f.series_columns:
        raise InputError(
            f"the model forecasts one series, not a fleet: read {source} with the data settings it was trained with, "
            "or use a model trained with data=fleet"
        )
    lookback, step = f.lookback, fleet.step
    ends = fleet.first + (fleet.length - 1) * step  # [D] ns of each device's last row
    window = (fleet.start + fleet.length - lookback)[:, None] + np.arange(lookback)  # [D, L] rows of each device's last window
    values = fleet.values[window].astype(np.float64)  # [D, L, C] data units (load_fleet does not scale)
    incomplete = np.flatnonzero(np.isnan(values).any(axis=(1, 2)))
    behind = np.flatnonzero(ends < ends.max() - f.horizon * step)
    when = lambda d: f" (last reading {pd.Timestamp(ends[d], tz=fleet.tz)})"  # noqa: E731
    notes = []
    if len(incomplete) or len(behind):
        problems = [f"{len(incomplete):,} device(s) miss readings in their last {lookback} steps: {named(fleet, incomplete)}"] * bool(
            len(incomplete)
        ) + [f"{len(behind):,} stopped more than {f.horizon} steps before the others: {named(fleet, behind, when)}"] * bool(len(behind))
        if not allow_stale:
            raise InputError(
                f"{source}: {'; '.join(problems)}.\nFill in their readings, or set allow_stale=true to leave out the incomplete ones "
                "and forecast the others from their own last reading."
            )
        notes = [f"allow_stale: left out {len(incomplete):,} incomplete device(s): {named(fleet, incomplete)}"] * bool(len(incomplete))
        notes += [f"{len(behind):,} forecast from an earlier last reading: {named(fleet, behind, when)}"] * bool(len(behind))
    keep = np.setdiff1d(np.arange(len(fleet)), incomplete)
    if not len(keep):
        raise InputError(f"{source}: no device has complete readings in its last {lookback} steps; nothing to forecast")
    d = np.repeat(keep, lookback)  # [K*L]
    stamps = (ends[keep] - (lookback - 1) * step)[:, None] + step * np.arange(lookback)  # [K, L] ns
    request = fleet.ids.iloc[d].reset_index(drop=True)
    request.columns = list(f.series_columns)  # a folder's ids take the model's id column name
    request[pyfunc.TIME] = _text(stamps.ravel(), fleet.tz)  # as the served model receives them
    for c, name in enumerate(fleet.columns):
        request[name] = values[keep][:, :, c].ravel()
    for name in f.static_columns:  # a model with static columns reads each device's value from the request
        request[name] = fleet.static[name].to_numpy()[d]
    out = model.predict(request)
    out.insert(len(f.series_columns), "last_reading", np.repeat(_stamps(ends[keep], fleet.tz), f.horizon))
    seen = int((f.series_index(list(fleet.ids.iloc[keep].itertuples(index=False, name=None))) >= 0).sum())
    left = fleet.report.left_out
    if len(left):
        shown = ", ".join(f"{fleet.report.name(r)} ({r['status']})" for _, r in left.iloc[:NAMED].iterrows())
        notes.append(f"left out by ingestion: {len(left):,} device(s): {shown}" + (" ..." if len(left) > NAMED else ""))
    summary = (
        f"{f.horizon} steps every {f.freq} for {len(keep):,} devices ({seen:,} seen in training, {len(keep) - seen:,} new: cold start), "
        f"each after its own last reading ({_stamps(ends[keep], fleet.tz).min()} to {_stamps(ends[keep], fleet.tz).max()})"
    )
    return out, "; ".join([summary, *notes])


def _stamps(ns: np.ndarray, tz: str | None) -> pd.DatetimeIndex:
    stamps = pd.to_datetime(ns, utc=tz is not None)
    return stamps.tz_convert(tz) if tz is not None else stamps


def _text(ns: np.ndarray, tz: str | None) -> np.ndarray:
    return np.asarray(_stamps(ns, tz).astype(str))
