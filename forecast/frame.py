"""Frame stage: sensor CSV export(s) -> one regular, validated pandas DataFrame and a data report.

`load_frame(spec)` reads a file, a glob or a folder of CSV files (in name order, as one series)
with pandas' pyarrow engine, then, in this order:

1. parses the timestamps (one column, or a date and a time column) and localises them;
2. turns values into float64 and missing-value codes into NaN; drops rows with nothing in them;
3. resolves the target and covariate columns, leaving text and empty columns out by default;
4. merges rows that share a timestamp (spec.duplicates), pivoting a long layout to one column
   per sensor;
5. resamples to a regular step (spec.freq, else the most common step) with spec.aggregation;
6. treats values stuck for more than spec.stuck_steps steps as missing;
7. drops rows at either end where any column is missing, interpolates interior gaps of up to
   spec.max_gap steps linearly and leaves longer gaps NaN (or fails, spec.long_gaps="fail").

Every problem with the input raises InputError naming the file, the line or column, and the
setting (under `data.`) that fixes it. The DataReport says what was found and changed.
Values travel as one float64 block per file and one (columns x steps) array after resampling,
so a large file costs little more than reading it: numbers are read arrow-backed and copied once,
into the block, and a file with every step present once is never copied again.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from glob import glob

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_numeric_dtype
from pandas.tseries.api import guess_datetime_format
from pandas.tseries.frequencies import to_offset

from forecast.errors import InputError

_CHOICES = {
    "layout": ("wide", "long"),
    "aggregation": ("mean", "sum", "first", "last", "min", "max", "median"),
    "duplicates": ("mean", "first", "last", "error"),
    "long_gaps": ("mask", "fail"),
}
_TIMESTAMP_NAMES = ("timestamp", "time", "date", "datetime", "ts", "time_stamp")
_EMPTY_ROWS = "empty rows"
_EDGE_ROWS = "incomplete rows at the edges"


@dataclass
class CsvSpec:
    """How to read a sensor export (the `data` section of the config).

    Args:
        path: A CSV file, a glob ("drops/*.csv") or a folder (all its *.csv files); several
            files are read in name order as one series.
        layout: "wide" (a timestamp and one column per sensor) or "long" (timestamp, sensor id
            and value on each row).
        timestamp: The timestamp column. None: date_column and time_column if given, else the
            first column named timestamp, time, date, datetime, ts or time_stamp (any case);
            when that is a "date" or "time" column and the other one exists too, both are joined.
        date_column: The date column, when date and time of day are in two columns.
        time_column: The time-of-day column that goes with date_column (joined with a space).
        time_format: strftime format of the timestamps ("DATE TIME" when joined). None: pandas
            infers it from the first value.
        timezone: IANA zone name: naive timestamps are localised to it, aware ones converted.
            None: naive timestamps stay naive, aware ones are converted to UTC.
        sensor_column: Long layout: the column holding the sensor id.
        value_column: Long layout: the column holding the reading.
        sep: Field separator.
        decimal: Decimal mark; European exports use sep=";" and decimal=",".
        na_values: Missing-value codes, numbers or strings, e.g. [-200, -9999, "NA"]; a numeric
            code also matches "-200.0".
        targets: Columns to forecast. None: every numeric column that is not a covariate.
        covariates: Input-only columns.
        freq: pandas offset alias of the step ("30min", "1h"). None: the most common step, on
            a grid through the first timestamp (a given freq is aligned to midnight instead).
        aggregation: How readings within one step are combined: mean, sum, first, last, min,
            max or median.
        duplicates: Rows sharing a timestamp: mean, first or last (the first or last reading of
            each column), or error.
        max_gap: Interior gaps of up to this many steps are interpolated linearly per column.
        long_gaps: Longer gaps: "mask" (left NaN; later stages skip windows touching them) or
            "fail".
        stuck_steps: A value repeated unchanged for more than this many consecutive steps is a
            stuck sensor; the whole run is treated as missing. None: no check.
    """

    path: str
    layout: str = "wide"
    timestamp: str | None = None
    date_column: str | None = None
    time_column: str | None = None
    time_format: str | None = None
    timezone: str | None = None
    sensor_column: str = "sensor"
    value_column: str = "value"
    sep: str = ","
    decimal: str = "."
    na_values: list = field(default_factory=list)
    targets: list[str] | None = None
    covariates: list[str] = field(default_factory=list)
    freq: str | None = None
    aggregation: str = "mean"
    duplicates: str = "mean"
    max_gap: int = 3
    long_gaps: str = "mask"
    stuck_steps: int | None = None


@dataclass
class DataReport:
    """What load_frame found and changed; counts are cells unless they say rows or steps.

    missing_codes counts numeric-code matches in the used columns (text codes are dropped by
    the reader like blanks); missing_values counts the NaN cells of the regular series just
    before gap filling; longest_gap is {"steps", "column", "start"} or None.
    """

    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_dropped: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    duplicate_policy: str = "mean"
    missing_codes: int = 0
    missing_values: int = 0
    steps_inserted: int = 0
    values_interpolated: int = 0
    values_masked: int = 0
    stuck_values: int = 0
    longest_gap: dict | None = None
    freq: str = ""
    start: str = ""
    end: str = ""
    rows: int = 0
    targets: list[str] = field(default_factory=list)
    covariates: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        source = self.files[0] if len(self.files) == 1 else f"{len(self.files)} files ({self.files[0]} ... {self.files[-1]})"
        found = [f"{_plural(self.duplicates, 'duplicate timestamp')} (kept {self.duplicate_policy})"] if self.duplicates else []
        found += [_plural(n, noun) for n, noun in ((self.missing_codes, "missing-code value"), (self.stuck_values, "stuck value")) if n]
        found += [f"{n:,} {reason if n != 1 else reason.replace('rows', 'row')} dropped" for reason, n in self.rows_dropped.items()]
        gap = self.longest_gap
        return [
            f"read {_plural(self.rows_read, 'row')} from {source}; " + ("; ".join(found) or "no duplicates, missing codes or stuck values"),
            f"{_plural(self.rows, 'row')} every {self.freq} from {self.start} to {self.end}; {_plural(self.steps_inserted, 'step')} "
            f"inserted, {_plural(self.values_interpolated, 'value')} interpolated, {self.values_masked:,} masked"
            + (f"; longest gap {_plural(gap['steps'], 'step')} in '{gap['column']}' from {gap['start']}" if gap else ""),
            f"targets: {', '.join(self.targets)}; covariates: {', '.join(self.covariates) or 'none'}"
            + (f"; ignored: {', '.join(self.ignored_columns)}" if self.ignored_columns else ""),
        ]


def load_frame(spec: CsvSpec) -> tuple[pd.DataFrame, DataReport]:
    """Reads spec.path into one regular series and reports what was found and changed.

    Returns a frame with a sorted, regular DatetimeIndex named "timestamp" (tz-aware when
    spec.timezone is set or the stamps carry UTC offsets; index.freq set), columns = targets then
    covariates as float64, NaN only where a long gap is masked. Raises InputError for bad input.
    """
    offset = _check_spec(spec)
    report = DataReport(files=_find_files(spec.path), duplicate_policy=spec.duplicates)
    numbers = [_number(code) for code in spec.na_values]
    codes = ([str(code) for code, n in zip(spec.na_values, numbers) if n is None], [n for n in numbers if n is not None])
    bad: dict[str, list] = {}  # column -> [count, file, row, value] of values that are not numbers
    coded: Counter = Counter()  # column -> values replaced by a numeric missing-value code
    parts, sources, blocks = [], [], []  # blocks: value arrays filled here that a part wraps as they are
    for path in report.files:
        part, kept = _read_file(path, spec, codes, bad, coded, report, blocks)
        parts.append(part)
        sources.append((path, len(part), kept))
    data = _concat(parts, report.files, spec)
    columns = _resolve_columns(_count_values(data, spec), bad, spec, report)
    report.missing_codes = sum(coded[name] for name in columns)
    frame = _merge_duplicates(data, columns, sources, spec, report)
    index, values = _resample(frame, offset or _infer_step(frame.index, spec), spec, report, blocks)
    _mask_stuck(values, spec, report)
    index, values = _fill_gaps(index, values, columns, spec, report)
    report.freq = index.freqstr if index.freqstr[0].isdigit() else f"1{index.freqstr}"
    report.start, report.end, report.rows = str(index[0]), str(index[-1]), len(index)
    return pd.DataFrame(values.T, index=index.rename("timestamp"), columns=columns, copy=False), report


def _check_spec(spec: CsvSpec) -> pd.DateOffset | None:
    """Validates the settings that need no data; returns the offset of spec.freq if given."""
    for name, valid in _CHOICES.items():
        if getattr(spec, name) not in valid:
            raise InputError(f"data.{name}={getattr(spec, name)!r} is not valid (reading '{spec.path}').\n"
                             f"Use one of: {', '.join(valid)}.")
    if (spec.date_column is None) != (spec.time_column is None):
        raise InputError(f"data.date_column and data.time_column go together (reading '{spec.path}').\n"
                         "Set both, or set data.timestamp to the single timestamp column.")
    if spec.max_gap < 0 or (spec.stuck_steps is not None and spec.stuck_steps < 1):
        raise InputError(f"data.max_gap={spec.max_gap} must be >= 0 and data.stuck_steps={spec.stuck_steps} >= 1 "
                         f"(reading '{spec.path}').\nFix them; data.stuck_steps=null turns the stuck-sensor check off.")
    if spec.timezone is not None:
        try:
            pd.Timestamp("2000-01-01").tz_localize(spec.timezone)
        except (KeyError, ValueError):
            raise InputError(f"data.timezone={spec.timezone!r} is not a known time zone (reading '{spec.path}').\n"
                             "Use an IANA name such as 'Europe/Berlin' or 'UTC'.") from None
    try:
        return None if spec.freq is None else to_offset(spec.freq)
    except ValueError:
        raise InputError(f"data.freq={spec.freq!r} is not a pandas offset alias (reading '{spec.path}').\n"
                         "Use e.g. '10min', '30min', '1h' or '1D', or data.freq=null to infer it.") from None


def _find_files(path: str) -> list[str]:
    if os.path.isdir(path):
        files, why = [os.path.join(path, name) for name in os.listdir(path) if name.lower().endswith(".csv")], "no .csv files in the folder"
    elif any(char in path for char in "*?["):
        files, why = glob(path), "the pattern matches no file"
    else:
        files, why = [path], "no such file"
    files = sorted(name for name in files if os.path.isfile(name))
    if not files:
        raise InputError(f"no CSV file at '{path}' ({why}).\n"
                         "Set data.path=... to a CSV file, a folder of CSV files or a glob such as 'drops/*.csv'.")
    return files


def _number(code) -> float | None:
    """The numeric value of a missing-value code, or None for a text code."""
    try:
        value = float(code)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(value) else value


def _read_file(path: str, spec: CsvSpec, codes: tuple[list, list], bad: dict, coded: Counter, report: DataReport,
               blocks: list):
    """One file -> (frame of float64 values indexed by timestamp, raw rows kept or None for all).

    A wide frame that keeps every row wraps the (columns x rows) block filled here; that block is
    appended to `blocks`, so that later stages may write into it instead of copying it.
    """
    columns, encoding = _read_header(path, spec)
    stamp_columns = _timestamp_columns(columns, path, spec)
    names = [name for name in columns if name not in stamp_columns]
    dtype = dict.fromkeys(stamp_columns, "str") if len(stamp_columns) == 2 or spec.time_format else {}
    if spec.layout == "long":
        for name, setting in ((spec.sensor_column, "sensor_column"), (spec.value_column, "value_column")):
            if name not in columns:
                raise InputError(f"'{path}' has no column '{name}' (columns: {', '.join(columns)}).\n"
                                 f"Set data.{setting} to the right column, or data.layout=wide.")
        names, dtype[spec.sensor_column] = [spec.value_column], "str"
    raw = _read_csv(path, spec, codes[0], dtype, encoding)
    if raw.empty:
        raise InputError(f"'{path}' has a header but no rows.\nAdd readings, or leave the file out of data.path.")
    report.rows_read += len(raw)
    stamps = _parse_timestamps(raw, stamp_columns, path, spec)
    block = np.empty((len(names), len(raw)))  # one row per column, filled in place
    for values, name in zip(block, names):
        numbers, failed = _numbers(raw[name], spec)
        values[:] = numbers
        hits = np.isin(values, codes[1]) if codes[1] else np.zeros(len(values), bool)
        if hits.any():                                      # a full masked pass only where a code is present
            values[hits] = np.nan
        if spec.layout == "long" and (hits.any() or failed.any()):
            sensors = raw[spec.sensor_column].to_numpy()
            coded.update(pd.Series(sensors[hits]).value_counts().to_dict())
            for sensor in pd.unique(sensors[failed]):
                _record_bad(bad, sensor, path, np.flatnonzero(failed & (sensors == sensor)), raw[name])
        elif spec.layout == "wide":
            coded[name] += int(hits.sum())
            _record_bad(bad, name, path, np.flatnonzero(failed), raw[name])
    if spec.layout == "long":
        frame = pd.DataFrame({"sensor": raw[spec.sensor_column].array, "value": block[0]}, index=stamps)
    else:
        frame = pd.DataFrame(block.T, index=stamps, columns=names, copy=False)
    unusable = stamps.isna() | (raw[spec.sensor_column].isna().to_numpy() if spec.layout == "long" else False)
    if not unusable.any():
        blocks += [block] if spec.layout == "wide" else []
        return frame, None
    readings = raw.loc[unusable, names].notna().any(axis=1).to_numpy()
    if readings.any():
        row = np.flatnonzero(unusable)[np.argmax(readings)]
        what = "timestamp" if pd.isna(stamps[row]) else "sensor id"
        raise InputError(f"'{path}' line {_line(path, row)} has a reading but no {what}.\nFix or remove that row.")
    report.rows_dropped[_EMPTY_ROWS] = report.rows_dropped.get(_EMPTY_ROWS, 0) + int(unusable.sum())
    return frame[~unusable], np.flatnonzero(~unusable)


def _read_header(path: str, spec: CsvSpec) -> tuple[list[str], str]:
    """Column names as pandas names them, and the encoding that reads them (UTF-8, else Latin-1)."""
    for encoding in ("utf-8", "latin-1"):
        try:
            return list(pd.read_csv(path, sep=spec.sep, nrows=0, encoding=encoding).columns), encoding
        except UnicodeDecodeError:
            continue
        except pd.errors.EmptyDataError:
            raise InputError(f"'{path}' is empty; expected a header line and rows of readings.\n"
                             "Fix the file, or leave it out of data.path.") from None
    raise AssertionError("latin-1 decodes any byte")


def _timestamp_columns(columns: list[str], path: str, spec: CsvSpec) -> list[str]:
    if spec.timestamp is not None or spec.date_column is not None:
        names = [spec.timestamp] if spec.timestamp is not None else [spec.date_column, spec.time_column]
        missing = [name for name in names if name not in columns]
        if not missing:
            return names
        found = f"no column '{missing[0]}'"
    else:
        lower = {name.strip().lower(): name for name in reversed(columns)}
        first = next((name for name in columns if name.strip().lower() in _TIMESTAMP_NAMES), None)
        if first is not None:
            pair = [lower.get("date"), lower.get("time")]
            return pair if first.strip().lower() in ("date", "time") and all(pair) else [first]
        found = "no timestamp column"
    raise InputError(f"'{path}' has {found} (columns: {', '.join(columns)}).\n"
                     "Set data.timestamp=NAME, or data.date_column and data.time_column.")


def _read_csv(path: str, spec: CsvSpec, text_codes: list[str], dtype: dict, encoding: str) -> pd.DataFrame:
    options = {"sep": spec.sep, "decimal": spec.decimal, "na_values": text_codes, "dtype": dtype or None, "encoding": encoding}
    try:
        try:
            return _plain_but_numbers(pd.read_csv(path, engine="pyarrow", dtype_backend="pyarrow", **options))
        except ValueError:  # rows or options the pyarrow engine rejects; the C engine names the line
            return pd.read_csv(path, engine="c", **options)
    except UnicodeDecodeError:
        return _read_csv(path, spec, text_codes, dtype, "latin-1")
    except pd.errors.ParserError as error:
        raise InputError(f"'{path}' is not a regular CSV table: {str(error).split('C error: ')[-1].strip()}.\n"
                         f"Every row needs one field per column; check data.sep={spec.sep!r}.") from None


def _plain_but_numbers(raw: pd.DataFrame) -> pd.DataFrame:
    """Arrow-backed columns as pandas' default reader gives them, except integers and floats.

    Those stay in arrow until _numbers copies them, once, into the value block; pandas' own
    conversion would copy every number once more (benchmarks/ingest.py measures the difference).
    """
    for position, dtype in enumerate(raw.dtypes):
        if not isinstance(dtype, pd.ArrowDtype) or dtype.kind in "iuf":
            continue
        if pa.types.is_null(dtype.pyarrow_dtype):  # an empty column: all NaN, as pandas' default reader has it
            raw.isetitem(position, np.full(len(raw), np.nan))
        else:
            raw.isetitem(position, raw.iloc[:, position].array.__arrow_array__().to_pandas().array)
    return raw


def _parse_timestamps(raw: pd.DataFrame, names: list[str], path: str, spec: CsvSpec) -> pd.DatetimeIndex:
    """Timestamps of every raw row (NaT where missing), in nanoseconds, localised per spec.timezone."""
    column = raw[names[0]].str.strip() + " " + raw[names[1]].str.strip() if len(names) == 2 else raw[names[0]]
    stamps = pd.DatetimeIndex(column) if is_datetime64_any_dtype(column) else _to_datetime(column, path, spec)
    stamps = stamps.as_unit("ns")
    if stamps.tz is not None:
        return stamps.tz_convert(spec.timezone or "UTC")
    if spec.timezone is None:
        return stamps
    try:
        return stamps.tz_localize(spec.timezone, ambiguous="infer", nonexistent="shift_forward")
    except ValueError:
        unclear = stamps.tz_localize(spec.timezone, ambiguous="NaT", nonexistent="shift_forward").isna() & stamps.notna()
        row = int(np.argmax(unclear))
        raise InputError(f"'{path}' line {_line(path, row)}: local time {stamps[row]} is ambiguous in {spec.timezone} "
                         "(clocks go back) and the row order does not tell which is meant.\n"
                         "Export timestamps in UTC or with UTC offsets, or set data.timezone=null.") from None


def _to_datetime(column: pd.Series, path: str, spec: CsvSpec) -> pd.DatetimeIndex:
    text = column.astype("str")
    first = text.first_valid_index()
    if first is None:
        return pd.DatetimeIndex(np.full(len(text), np.datetime64("NaT", "ns")))
    fmt = spec.time_format or guess_datetime_format(text[first])
    if fmt is None:
        raise InputError(f"'{path}' line {_line(path, first)}: cannot tell the format of timestamp {text[first]!r}.\n"
                         "Set data.time_format to its strftime format, e.g. '%d.%m.%Y %H:%M'.")
    try:
        try:
            stamps = pd.to_datetime(text, format=fmt, errors="coerce")
        except ValueError:  # mixed UTC offsets, e.g. across a daylight-saving change
            stamps = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    except ValueError as error:
        raise InputError(f"'{path}': cannot read timestamps with format {fmt!r} ({error}).\n"
                         "Set data.time_format to a strftime format such as '%Y-%m-%d %H:%M'.") from None
    failed = (stamps.isna() & text.notna()).to_numpy()
    if failed.any():
        row = int(np.argmax(failed))
        why = "data.time_format" if spec.time_format else f"the format guessed from line {_line(path, first)}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            example = guess_datetime_format(text.iloc[row].strip(), dayfirst=True) or "%Y-%m-%d %H:%M"
        raise InputError(f"'{path}' line {_line(path, row)}: timestamp {text.iloc[row]!r} does not match {why} ({fmt!r}).\n"
                         f"Fix the value, or set data.time_format to the format of the file, e.g. {example!r}.")
    return pd.DatetimeIndex(stamps)


def _numbers(column: pd.Series, spec: CsvSpec) -> tuple[np.ndarray, np.ndarray]:
    """float64 values of a column as read, and where a present value is not a number."""
    if is_numeric_dtype(column) or is_bool_dtype(column):
        arrow = {"na_value": np.nan} if isinstance(column.dtype, pd.ArrowDtype) else {}  # nulls -> NaN
        return column.to_numpy(dtype="float64", **arrow), np.zeros(len(column), bool)
    if is_datetime64_any_dtype(column):
        return np.full(len(column), np.nan), column.notna().to_numpy()
    text = column.astype("str").str.strip()
    if spec.decimal != ".":
        text = text.str.replace(spec.decimal, ".", regex=False)
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    return numbers.to_numpy(), (numbers.isna() & text.notna() & (text != "")).to_numpy()


def _record_bad(bad: dict, name: str, path: str, rows: np.ndarray, column: pd.Series) -> None:
    """Counts a column's values that are not numbers, remembering the first one (file, row, value)."""
    if rows.size and name in bad:
        bad[name][0] += rows.size
    elif rows.size:
        bad[name] = [rows.size, path, int(rows[0]), column.iloc[rows[0]]]


def _line(path: str, row: int) -> int:
    """1-based line of data row `row` (0-based), counting the header and skipping blank lines as the reader does."""
    seen = 0
    with open(path, "rb") as file:
        for number, text in enumerate(file, 1):
            seen += bool(text.strip())
            if seen == row + 2:
                return number
    return row + 2


def _concat(parts: list[pd.DataFrame], files: list[str], spec: CsvSpec) -> pd.DataFrame:
    zones = [part.index.tz is not None for part in parts]
    if not all(zones) and any(zones):
        raise InputError(f"'{files[zones.index(True)]}' has timestamps with UTC offsets, '{files[zones.index(False)]}' "
                         f"without (data.path='{spec.path}').\nSet data.timezone to the zone of the local timestamps.")
    return parts[0] if len(parts) == 1 else pd.concat(parts)


def _count_values(data: pd.DataFrame, spec: CsvSpec) -> pd.Series:
    """Numbers present per column in file order (per sensor in the long layout, sorted by id)."""
    if spec.layout == "long":
        return data.groupby("sensor")["value"].count()
    values = data.to_numpy(dtype="float64")  # [rows, columns]: a view when one block holds them
    return pd.Series([len(data) - np.count_nonzero(np.isnan(column)) for column in values.T], index=data.columns, dtype="int64")


def _resolve_columns(counts: pd.Series, bad: dict, spec: CsvSpec, report: DataReport) -> list[str]:
    """Checks the requested columns and returns targets + covariates (defaults: numeric, non-empty)."""
    text = [name for name in counts.index if bad.get(name, [0])[0] > counts[name]]  # fewer than half are numbers
    empty = [name for name in counts.index if counts[name] == 0 and name not in text]
    numeric = [name for name in counts.index if name not in text and name not in empty]
    targets = list(spec.targets) if spec.targets is not None else [name for name in numeric if name not in spec.covariates]
    kind = "sensor" if spec.layout == "long" else "column"
    for name in [*targets, *spec.covariates]:
        if name not in counts.index:
            raise InputError(f"no {kind} '{name}' in '{spec.path}' (numeric {kind}s: {', '.join(numeric) or 'none'}).\n"
                             "Fix data.targets / data.covariates.")
        if name in bad:
            count, path, row, value = bad[name]
            raise InputError(f"'{path}' line {_line(path, row)}, {kind} '{name}': {value!r} is not a number "
                             f"({count:,} such value{'s' * (count > 1)} in the {kind}).\nFix it, add it to data.na_values "
                             f"if it marks a missing reading, or check data.decimal={spec.decimal!r} and data.sep={spec.sep!r}.")
        if name in empty:
            raise InputError(f"{kind} '{name}' in '{spec.path}' has no values (all missing).\n"
                             "Leave it out of data.targets / data.covariates, or check data.na_values.")
    both = [name for name in targets if name in spec.covariates]
    if both or not targets:
        problem = f"{kind} '{both[0]}' is both a target and a covariate" if both else \
            f"no numeric {kind} is left to forecast (text: {', '.join(text) or 'none'})"
        raise InputError(f"'{spec.path}': {problem}.\nFix data.targets / data.covariates, or check "
                         f"data.decimal={spec.decimal!r} and data.na_values.")
    report.targets, report.covariates = targets, list(spec.covariates)
    report.ignored_columns = [*text, *empty]
    return [*targets, *spec.covariates]


def _merge_duplicates(data: pd.DataFrame, columns: list[str], sources: list, spec: CsvSpec,
                      report: DataReport) -> pd.DataFrame:
    """Sorted wide frame of `columns` with one row per timestamp (a long layout is pivoted here)."""
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
        values = pd.Series(data["value"].to_numpy()[rows])
        time, stamps = pd.factorize(data.index[rows], sort=True)
        key = time * len(columns) + sensor[rows]
    repeated = np.bincount(key)[key] > 1
    if repeated.any():
        report.duplicates = len(np.unique(time[repeated]))
        if spec.duplicates == "error":
            hits = np.flatnonzero(key == key[repeated].min())
            which = f" for sensor '{columns[sensor[rows[hits[0]]]]}'" if spec.layout == "long" else ""
            places = ", ".join(f"'{path}' line {line}" for path, line in _places(rows[hits][:5], sources))
            raise InputError(f"timestamp {stamps[time[hits[0]]]} occurs more than once{which} ({places}) and "
                             "data.duplicates=error.\nRemove the repeated rows, or set data.duplicates to mean, first or last.")
        values = values.groupby(key).agg(spec.duplicates)
        key = values.index.to_numpy()
    if spec.layout == "wide":
        return values.set_axis(stamps)
    grid = np.full((len(columns), len(stamps)), np.nan)
    grid[key % len(columns), key // len(columns)] = values.to_numpy()
    return pd.DataFrame(grid.T, index=stamps, columns=columns, copy=False)


def _places(positions: np.ndarray, sources: list) -> list[tuple[str, int]]:
    """(file, line) of rows of the concatenated data, given (file, rows, raw rows kept or None) per file."""
    ends = np.cumsum([rows for _, rows, _ in sources])
    places = []
    for position in positions:
        index = int(np.searchsorted(ends, position, side="right"))
        path, rows, kept = sources[index]
        row = position - (ends[index] - rows)
        places.append((path, _line(path, int(kept[row] if kept is not None else row))))
    return places


def _infer_step(index: pd.DatetimeIndex, spec: CsvSpec) -> pd.DateOffset:
    """The most common step between consecutive timestamps."""
    if len(index) < 2:
        raise InputError(f"'{spec.path}' has a single timestamp ({index[0]}), too few to infer the step.\n"
                         "Add readings, or set data.freq, e.g. '30min'.")
    steps = np.diff(index.asi8)
    common = steps[0] if (steps == steps[0]).all() else pd.Series(steps).value_counts().index[0]
    step = pd.Timedelta(int(common), unit="ns")
    days = step / pd.Timedelta(days=1)
    return to_offset(f"{int(days)}D") if days == int(days) else to_offset(step)


def _resample(frame: pd.DataFrame, offset: pd.DateOffset, spec: CsvSpec, report: DataReport, blocks: list):
    """(index, values as columns x steps): readings in a step combined by spec.aggregation, empty steps NaN.

    When every step is there once, the values are the frame's own: the block in `blocks` that it
    wraps, if any, else a copy.
    """
    origin = "start" if spec.freq is None else "start_day"  # an inferred grid runs through the first reading
    if isinstance(offset, pd.offsets.Tick):  # fast path when every reading lies on the grid: nothing to combine
        start = frame.iloc[:1].resample(offset, origin=origin).size().index[0]
        stamps = frame.index.as_unit("ns").asi8
        if stamps[0] == start.value and (np.diff(stamps) == offset.nanos).all():  # every step there once: nothing to move
            return pd.date_range(start, periods=len(frame), freq=offset, unit="ns"), _writable(frame, blocks)
        since = stamps - start.value
        if not (since % offset.nanos).any():
            steps = since // offset.nanos
            values = np.full((frame.shape[1], steps[-1] + 1), np.nan)
            values[:, steps] = frame.to_numpy(dtype="float64").T
            report.steps_inserted = values.shape[1] - len(frame)
            return pd.date_range(start, periods=values.shape[1], freq=offset, unit="ns"), values
    resampler = frame.resample(offset, origin=origin)
    regular = resampler.sum(min_count=1) if spec.aggregation == "sum" else resampler.agg(spec.aggregation)
    report.steps_inserted = int((resampler.size() == 0).sum())
    return regular.index, np.array(regular.to_numpy(dtype="float64").T, order="C")


def _writable(frame: pd.DataFrame, blocks: list) -> np.ndarray:
    """The frame's values as a (columns x rows) float64 array that later stages may write into.

    pandas shows them read-only; when they are a block filled by _read_file (one wide file, no
    row dropped, merged or reordered), that block is returned, else a copy. Nothing outside
    load_frame holds either.
    """
    values = frame.to_numpy(dtype="float64").T
    for block in blocks:
        if values.shape == block.shape and values.strides == block.strides and values.ctypes.data == block.ctypes.data:
            return block
    return values if values.flags.writeable and values.flags.c_contiguous else np.array(values, order="C")


def _mask_stuck(values: np.ndarray, spec: CsvSpec, report: DataReport) -> None:
    """Values unchanged for more than spec.stuck_steps consecutive steps become NaN (the whole run)."""
    if spec.stuck_steps is None:
        return
    for column in values:
        starts, links = _runs(column[1:] == column[:-1])  # a run of k equal values has k - 1 links
        stuck = _positions(starts[links >= spec.stuck_steps], links[links >= spec.stuck_steps] + 1)
        column[stuck] = np.nan
        report.stuck_values += stuck.size


def _fill_gaps(index: pd.DatetimeIndex, values: np.ndarray, columns: list[str], spec: CsvSpec, report: DataReport):
    """Trims incomplete edge rows, interpolates gaps up to spec.max_gap steps, masks or fails on longer ones."""
    missing = np.isnan(values)
    report.missing_values = int(missing.sum())
    complete = ~missing.any(axis=0)
    if not complete.any():
        raise InputError(f"'{spec.path}': no timestamp has a value in every column ({', '.join(columns)}).\n"
                         "Check data.targets / data.covariates: some never overlap in time.")
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
            raise InputError(f"'{spec.path}' column '{name}': a gap of {lengths[widest]} steps from {start} to {end} is "
                             f"longer than data.max_gap={spec.max_gap}.\n"
                             f"Set data.max_gap={lengths[widest]} to interpolate it, or data.long_gaps=mask to skip it.")
        short = lengths <= spec.max_gap
        report.values_masked += int(lengths[~short].sum())
        starts, lengths = starts[short], lengths[short]  # filled on the line between the values either side
        at, left, right = _positions(starts, lengths), column[starts - 1], column[starts + lengths]
        share = (at - np.repeat(starts - 1, lengths)) / np.repeat(lengths + 1, lengths)
        column[at] = np.repeat(left, lengths) + share * np.repeat(right - left, lengths)
        report.values_interpolated += at.size
    return index, values


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


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' * (n != 1)}"
