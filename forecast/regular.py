"""Regularising: readings gathered by forecast/reading.py -> one value per column on a regular time grid.

`regularise(intake, data, columns, offset)` merges rows that share a timestamp (within a file:
spec.duplicates; across files: spec.overlap, refusing disagreeing readings by default), pivots a
long layout, checks that the grid is not far larger than the readings warrant, resamples onto it,
checks that every column can be standardised, masks stuck values and fills or masks gaps.
Values travel as one (columns x steps) float64 array; a wide file with every step present once
is never copied (the block filled by the reader is written in place).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pandas.errors import OutOfBoundsDatetime
from pandas.tseries.frequencies import to_offset

from forecast.errors import InputError
from forecast.reading import shown

if TYPE_CHECKING:
    from forecast.reading import Intake

_EDGE_ROWS = "incomplete rows at the edges"
_GRID_SLACK = 1000  # steps always allowed beyond max_grid_factor x readings, so short series may have gaps


def regularise(intake: Intake, data: pd.DataFrame, columns: list[str], offset: pd.DateOffset | None) -> pd.DataFrame:
    """The regular frame of `columns` of intake.data(): sorted DatetimeIndex named timestamp with freq set, float64 values."""
    spec, report = intake.spec, intake.report
    frame = _merge(intake, data, columns)
    offset = offset or _infer_step(frame.index, spec)
    _check_grid(frame.index, offset, intake)
    try:
        index, values = _resample(frame, offset, intake)
    except (OverflowError, OutOfBoundsDatetime):  # a grid edge beyond the years pandas can hold
        (path_a, line_a), (path_b, line_b) = intake.line_of(frame.index[0]), intake.line_of(frame.index[-1])
        raise InputError(
            f"'{spec.path}': no regular grid every {_step_text(offset)} fits between {frame.index[0]} ('{path_a}' line "
            f"{line_a}) and {frame.index[-1]} ('{path_b}' line {line_b}).\nFix the timestamps (a typo in a year?), "
            "or set data.freq."
        ) from None
    _check_magnitude(values, columns, intake)
    _mask_stuck(values, spec, report)
    report.grid_steps = len(index)
    report.missing_by_column = {name: int(np.count_nonzero(np.isnan(column))) for name, column in zip(columns, values)}
    index, values = _fill_gaps(index, values, columns, spec, report)
    report.freq = index.freqstr if index.freqstr[0].isdigit() else f"1{index.freqstr}"
    report.start, report.end, report.rows = str(index[0]), str(index[-1]), len(index)
    return pd.DataFrame(values.T, index=index.rename("timestamp"), columns=columns, copy=False)


# --- one row per timestamp -----------------------------------------------------------------------


def _merge(intake: Intake, data: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Sorted wide frame of `columns` with one row per timestamp (a long layout is pivoted here).

    Rows of one file that share a timestamp are combined by spec.duplicates. A timestamp in more
    than one file keeps its readings when they agree; when they disagree it is an error unless
    spec.overlap names a policy (first or last file in name order, or mean).
    """
    spec, report = intake.spec, intake.report
    if spec.layout == "wide":
        data = data if list(data.columns) == columns else data[columns]
        if data.index.is_unique:
            return data if data.index.is_monotonic_increasing else data.sort_index()
        rows, values = np.arange(len(data)), data.reset_index(drop=True)
        time, stamps = pd.factorize(data.index, sort=True)
        key = time
    else:  # one key per (timestamp, sensor)
        codes, names = pd.factorize(data["sensor"])
        sensor = np.append(pd.Index(columns).get_indexer(names), -1)[codes]  # position in columns, else -1
        rows = np.flatnonzero(sensor >= 0)
        values = pd.DataFrame({"value": data["value"].to_numpy()[rows]})
        time, stamps = pd.factorize(data.index[rows], sort=True)
        key = time * len(columns) + sensor[rows]
    files = len(intake.sources)
    file = intake.file_numbers()[rows]
    inner = key * files + file  # one key per (timestamp[, sensor], file)
    origin = rows  # the first raw row of each row of values
    repeated = _repeated(inner)
    if repeated.any():
        report.duplicates = len(np.unique(time[repeated]))
        if spec.duplicates == "error":
            hits = np.flatnonzero(inner == inner[repeated].min())
            which = f" for sensor '{shown(columns[key[hits[0]] % len(columns)])}'" if spec.layout == "long" else ""
            places = ", ".join(f"'{path}' line {line}" for path, line in intake.places(rows[hits][:5]))
            raise InputError(
                f"timestamp {stamps[time[hits[0]]]} occurs more than once{which} ({places}) and "
                "data.duplicates=error.\nRemove the repeated rows, or set data.duplicates to mean, first or last."
            )
        values = values.groupby(inner).agg(spec.duplicates)
        origin = pd.Series(rows).groupby(inner).first().to_numpy()
        key = values.index.to_numpy() // files
    if files > 1:
        values, key = _overlap(intake, values, key, origin, stamps, columns)
    if spec.layout == "wide":
        return values.set_axis(stamps)
    grid = np.full((len(columns), len(stamps)), np.nan)
    grid[key % len(columns), key // len(columns)] = values["value"].to_numpy()
    return pd.DataFrame(grid.T, index=stamps, columns=columns, copy=False)


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' * (n != 1)}"


def _repeated(key: np.ndarray) -> np.ndarray:
    """Where a key occurs more than once."""
    codes, _ = pd.factorize(key)
    return np.bincount(codes)[codes] > 1


def _overlap(
    intake: Intake, values: pd.DataFrame, key: np.ndarray, origin: np.ndarray, stamps: pd.DatetimeIndex, columns: list[str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per key: readings of a key found in several files merged per spec.overlap (rows are in file order)."""
    spec, report = intake.spec, intake.report
    shared = _repeated(key)
    if not shared.any():
        return values, key
    per_stamp = len(columns) if spec.layout == "long" else 1  # keys of one timestamp
    report.overlaps = len(np.unique(key[shared] // per_stamp))
    group = values[shared].groupby(key[shared])
    low, high = group.min(), group.max()  # NaN only where every file lacks the reading
    differ = (low.to_numpy() != high.to_numpy()) & ~np.isnan(low.to_numpy())  # [shared keys, columns]
    conflicted = differ.any(axis=1)
    report.overlap_conflicts = len(np.unique(low.index.to_numpy()[conflicted] // per_stamp))
    if conflicted.any() and spec.overlap == "error":
        first = low.index.to_numpy()[conflicted][0]  # keys are in time order: the earliest
        column = int(np.argmax(differ[np.flatnonzero(conflicted)[0]]))
        name = columns[first % per_stamp] if spec.layout == "long" else columns[column]
        at = np.flatnonzero(key == first)
        readings = values.iloc[at, column].to_numpy()
        one, other = sorted((at[np.nanargmin(readings)], at[np.nanargmax(readings)]))
        (path_a, line_a), (path_b, line_b) = intake.places([origin[one], origin[other]])
        raise InputError(
            f"'{path_a}' line {line_a} and '{path_b}' line {line_b} disagree at {stamps[first // per_stamp]} "
            f"({intake.kind} '{shown(name)}': {values.iloc[one, column]:g} vs {values.iloc[other, column]:g}; "
            f"{_plural(report.overlap_conflicts, 'timestamp')} with differing readings).\n"
            "Remove the overlap from one of the files, or set data.overlap to first, last or mean (files in name order)."
        )
    merged = values.groupby(key).agg("first" if spec.overlap == "error" else spec.overlap)
    return merged, merged.index.to_numpy()


# --- the grid ------------------------------------------------------------------------------------


def _infer_step(index: pd.DatetimeIndex, spec) -> pd.DateOffset:
    """The most common step between consecutive timestamps."""
    if len(index) < 2:
        raise InputError(
            f"'{spec.path}' has a single timestamp ({index[0]}), too few to infer the step.\nAdd readings, or set data.freq, e.g. '30min'."
        )
    steps = np.diff(index.asi8)
    common = steps[0] if (steps == steps[0]).all() else pd.Series(steps).value_counts().index[0]
    step = pd.Timedelta(int(common), unit="ns")
    days = step / pd.Timedelta(days=1)
    return to_offset(f"{int(days)}D") if days == int(days) else to_offset(step)


def _check_grid(index: pd.DatetimeIndex, offset: pd.DateOffset, intake: Intake) -> None:
    """Refuses a grid with far more steps than there are readings (a typo in a year), before building it."""
    spec = intake.spec
    step = (index[0] + offset - index[0]).value  # ns; a month or a business day: its first length
    steps = (index[-1] - index[0]).value // step + 1
    allowed = spec.max_grid_factor * len(index) + _GRID_SLACK
    if steps <= allowed:
        return
    gaps = np.diff(index.asi8)
    widest = int(np.argmax(gaps))
    what = (
        f"a grid every {_step_text(offset)} from {index[0]} to {index[-1]} would need {steps:,} steps for {len(index):,} "
        f"timestamps, more than data.max_grid_factor={spec.max_grid_factor:g} steps per timestamp"
    )
    if gaps[widest] // step > steps / 2:  # one jump makes most of the grid: name the row beyond it
        lonely = index[widest] if widest + 1 <= len(index) - widest - 1 else index[widest + 1]
        path, line = intake.line_of(lonely)
        side = "before" if lonely == index[widest] else "after"
        raise InputError(
            f"'{path}' line {line}: timestamp {lonely} lies {_duration(gaps[widest])} {side} the "
            f"rest of the series; {what}.\nFix that timestamp (a typo in the year?) or remove the row."
        )
    (path_a, line_a), (path_b, line_b) = intake.line_of(index[0]), intake.line_of(index[-1])
    raise InputError(
        f"'{spec.path}': {what} (first '{path_a}' line {line_a}, last '{path_b}' line {line_b}).\n"
        "Set data.freq to the step the sensors report at, or raise data.max_grid_factor for sparse data."
    )


def _duration(ns: int) -> str:
    days = ns / 86_400e9
    return f"{days / 365.25:,.0f} years" if days >= 730 else f"{days:,.0f} days" if days >= 2 else str(pd.Timedelta(int(ns), unit="ns"))


def _step_text(offset: pd.DateOffset) -> str:
    return offset.freqstr if offset.freqstr[0].isdigit() else f"1{offset.freqstr}"


def _resample(frame: pd.DataFrame, offset: pd.DateOffset, intake: Intake) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """(index, values as columns x steps): readings in a step combined by spec.aggregation, empty steps NaN.

    When every step is there once, the values are the frame's own: the block the reader filled,
    if the frame wraps one, else a copy.
    """
    spec, report = intake.spec, intake.report
    origin = "start" if spec.freq is None else "start_day"  # an inferred grid runs through the first reading
    if isinstance(offset, pd.offsets.Tick):  # fast path when every reading lies on the grid: nothing to combine
        start = frame.iloc[:1].resample(offset, origin=origin).size().index[0]
        stamps = frame.index.as_unit("ns").asi8
        if stamps[0] == start.value and (np.diff(stamps) == offset.nanos).all():  # every step there once: nothing to move
            return pd.date_range(start, periods=len(frame), freq=offset, unit="ns"), _writable(frame, intake.blocks)
        since = stamps - start.value
        if not (since % offset.nanos).any():
            steps = since // offset.nanos
            values = np.full((frame.shape[1], steps[-1] + 1), np.nan)
            values[:, steps] = frame.to_numpy(dtype="float64").T
            report.steps_inserted = values.shape[1] - len(frame)
            return pd.date_range(start, periods=values.shape[1], freq=offset, unit="ns"), values
    anchored = isinstance(offset, pd.offsets.Tick) or frame.index.tz is None  # calendar steps in a zone start at midnight
    resampler = frame.resample(offset, **({"origin": origin} if anchored else {}))
    regular = resampler.sum(min_count=1) if spec.aggregation == "sum" else resampler.agg(spec.aggregation)
    report.steps_inserted = int((resampler.size() == 0).sum())
    return regular.index, np.array(regular.to_numpy(dtype="float64").T, order="C")


def _writable(frame: pd.DataFrame, blocks: list[np.ndarray]) -> np.ndarray:
    """The frame's values as a (columns x rows) float64 array that later stages may write into.

    pandas shows them read-only; when they are a block filled by the reader (one wide file, no
    row dropped, merged or reordered), that block is returned, else a copy. Nothing outside
    load_frame holds either. tests/test_frame.py checks that a clean wide file is never copied.
    """
    values = frame.to_numpy(dtype="float64").T
    for block in blocks:
        if values.shape == block.shape and values.strides == block.strides and values.ctypes.data == block.ctypes.data:
            return block
    return values if values.flags.writeable and values.flags.c_contiguous else np.array(values, order="C")


# --- values --------------------------------------------------------------------------------------


def _check_magnitude(values: np.ndarray, columns: list[str], intake: Intake) -> None:
    """Refuses a column whose mean or spread overflows float64, naming its largest reading."""
    bound = np.sqrt(np.finfo(np.float64).max / max(values.shape[1], 1)) / 4  # below it, no sum of squares can overflow
    for name, column in zip(columns, values):
        if not np.isfinite(column).any():
            continue
        if max(abs(np.nanmax(column)), abs(np.nanmin(column))) <= bound:
            continue
        with np.errstate(all="ignore"):
            if np.isfinite(np.nanmean(column)) and np.isfinite(np.nanstd(column)):
                continue
        path, line, value = intake.largest(name)
        raise InputError(
            f"'{path}' line {line}, {intake.kind} '{shown(name)}': {value:g} is too large to forecast with "
            "(the column's spread overflows float64).\nFix the value, or rescale the column to smaller units."
        )


def _mask_stuck(values: np.ndarray, spec, report) -> None:
    """Values unchanged for more than spec.stuck_steps consecutive steps become NaN (the whole run)."""
    if spec.stuck_steps is None:
        return
    for column in values:
        starts, links = _runs(column[1:] == column[:-1])  # a run of k equal values has k - 1 links
        stuck = _positions(starts[links >= spec.stuck_steps], links[links >= spec.stuck_steps] + 1)
        column[stuck] = np.nan
        report.stuck_values += stuck.size


def _fill_gaps(index: pd.DatetimeIndex, values: np.ndarray, columns: list[str], spec, report):
    """Trims incomplete edge rows, interpolates gaps up to spec.max_gap steps, masks or fails on longer ones."""
    missing = np.isnan(values)
    report.missing_values = int(missing.sum())
    complete = ~missing.any(axis=0)
    if not complete.any():
        raise InputError(
            f"'{spec.path}': no timestamp has a value in every column ({', '.join(map(shown, columns))}).\n"
            "Check data.targets / data.covariates: some never overlap in time."
        )
    first, stop = int(np.argmax(complete)), len(index) - int(np.argmax(complete[::-1]))
    if first or stop < len(index):
        report.rows_dropped[_EDGE_ROWS] = first + len(index) - stop
    index, values, missing = index[first:stop], values[:, first:stop], missing[:, first:stop]
    for name, column, gaps in zip(columns, values, missing):
        starts, lengths = _runs(gaps)
        if not starts.size:
            continue
        widest = int(np.argmax(lengths))
        if report.longest_gap is None or lengths[widest] > report.longest_gap["steps"]:
            report.longest_gap = {"steps": int(lengths[widest]), "column": name, "start": str(index[starts[widest]])}
        if spec.long_gaps == "fail" and lengths[widest] > spec.max_gap:
            start, end = index[starts[widest]], index[starts[widest] + lengths[widest] - 1]
            raise InputError(
                f"'{spec.path}' column '{shown(name)}': a gap of {lengths[widest]} steps from {start} to {end} is "
                f"longer than data.max_gap={spec.max_gap}.\n"
                f"Set data.max_gap={lengths[widest]} to interpolate it, or data.long_gaps=mask to skip it."
            )
        short = lengths <= spec.max_gap
        report.values_masked += int(lengths[~short].sum())
        report.values_interpolated += interpolate(column, starts[short], lengths[short])
    return index, values


def interpolate(column: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> int:
    """Fills interior gaps (start, length) of a column in place, on the line between the values either side; returns cells filled."""
    at, left, right = _positions(starts, lengths), column[starts - 1], column[starts + lengths]
    share = (at - np.repeat(starts - 1, lengths)) / np.repeat(lengths + 1, lengths)
    column[at] = np.repeat(left, lengths) + share * np.repeat(right - left, lengths)
    return at.size


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of every run of True in a boolean array."""
    at = np.flatnonzero(mask)  # one pass; the rest is as small as the number of True values
    if not at.size:
        return at, at
    first = np.concatenate(([0], np.flatnonzero(np.diff(at) > 1) + 1))  # positions in `at` where a run begins
    last = np.append(first[1:] - 1, at.size - 1)
    return at[first], at[last] - at[first] + 1


def _positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices inside the runs given by start and length, in order."""
    return np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
