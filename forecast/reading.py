"""Reading: sensor CSV file(s) -> raw readings as float64 blocks indexed by timestamp, and what was wrong with them.

`read(spec, report)` recognises each file for what it is (forecast/sniff.py), reads it with
pandas' pyarrow engine, parses its timestamps and turns its values into numbers. Everything
reading finds is gathered in one `Intake`: the parts, where their rows came from, the cells that
are not numbers or not finite, and the missing-value codes replaced. The Intake then chooses the
columns to use (`Intake.columns`) and names the file and line of any row it is asked about
(`Intake.places`, `Intake.line_of`, `Intake.largest`).
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_numeric_dtype
from pandas.errors import OutOfBoundsDatetime
from pandas.tseries.api import guess_datetime_format

from forecast import sniff
from forecast.errors import InputError

if TYPE_CHECKING:
    from forecast.frame import CsvSpec, DataReport

_TIMESTAMP_NAMES = ("timestamp", "time", "date", "datetime", "ts", "time_stamp")
_EMPTY_ROWS = "empty rows"
# how numbers in another convention look, to say which setting reads them
_GROUPED = re.compile(r"^[+-]?\d{1,3}(?P<sep>[,.' _\u00a0\u202f])\d{3}(?:(?P=sep)\d{3})*(?:[.,]\d+)?$")
_PLAIN_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+(?:[eE][+-]?\d+)?$")


@dataclass
class Cell:
    """The first cell of a column that failed a check, and how many of its cells did."""

    path: str
    row: int  # 0-based data row in the file, as read
    value: object
    count: int


@dataclass
class Intake:
    """What reading the files gathered: the rows, where they came from and what was wrong with them.

    Attributes:
        spec: The reading settings.
        report: The data report being filled.
        parts: Per file, a frame indexed by timestamp: one float64 column per sensor (wide) or
            sensor and value (long).
        sources: Per file, (path, rows in its part, raw rows kept, or None when all are).
        blocks: The (columns x rows) value arrays that wide parts wrap as they are; later stages
            may write into them instead of copying (see regular._writable).
        not_numbers: Column -> its first cell that is not a number.
        infinite: Column -> its first cell that is infinite.
        coded: Column -> cells replaced by a numeric missing-value code.
        nonfinite: Column -> infinite cells treated as missing (spec.nonfinite="missing").
    """

    spec: CsvSpec
    report: DataReport
    parts: list[pd.DataFrame] = field(default_factory=list)
    sources: list[tuple[str, int, np.ndarray | None]] = field(default_factory=list)
    blocks: list[np.ndarray] = field(default_factory=list)
    not_numbers: dict[str, Cell] = field(default_factory=dict)
    infinite: dict[str, Cell] = field(default_factory=dict)
    coded: Counter = field(default_factory=Counter)
    nonfinite: Counter = field(default_factory=Counter)
    ids: list[str] = field(default_factory=list)  # a fleet's id columns (forecast/fleet.py): read as text, kept aside
    id_parts: list[pd.DataFrame] = field(default_factory=list)  # per file, the id columns of the rows kept

    def __post_init__(self):
        numbers = [_number(code) for code in self.spec.na_values]
        self.text_codes = [str(code) for code, n in zip(self.spec.na_values, numbers) if n is None]
        self.number_codes = [n for n in numbers if n is not None]

    @property
    def kind(self) -> str:
        return "sensor" if self.spec.layout == "long" else "column"

    def data(self) -> pd.DataFrame:
        """All parts as one frame, in file order."""
        zones = [part.index.tz is not None for part in self.parts]
        if not all(zones) and any(zones):
            files = self.report.files
            raise InputError(
                f"'{files[zones.index(True)]}' has timestamps with UTC offsets, '{files[zones.index(False)]}' "
                f"without (data.path='{self.spec.path}').\nSet data.timezone to the zone of the local timestamps."
            )
        data = self.parts[0] if len(self.parts) == 1 else pd.concat(self.parts)
        if len(data) == 0:
            raise InputError(f"'{self.spec.path}': no row has a timestamp.\nCheck data.timestamp and data.sep={self.spec.sep!r}.")
        return data

    def file_numbers(self) -> np.ndarray:
        """The file (position in report.files) of each row of data()."""
        return np.repeat(np.arange(len(self.sources)), [rows for _, rows, _ in self.sources])

    def places(self, positions) -> list[tuple[str, int]]:
        """(file, line) of rows of data(), by position."""
        ends = np.cumsum([rows for _, rows, _ in self.sources])
        places = []
        for position in positions:
            index = int(np.searchsorted(ends, position, side="right"))
            path, rows, kept = self.sources[index]
            row = int(position - (ends[index] - rows))
            places.append((path, line(path, int(kept[row] if kept is not None else row))))
        return places

    def line_of(self, stamp: pd.Timestamp) -> tuple[str, int]:
        """(file, line) of the first row read with this timestamp."""
        offset = 0
        for part, (_, rows, _) in zip(self.parts, self.sources):
            hits = np.flatnonzero(part.index == stamp)
            if hits.size:
                return self.places([offset + hits[0]])[0]
            offset += rows
        return self.spec.path, 0

    def largest(self, name: str) -> tuple[str, int, float]:
        """(file, line, value) of the reading of largest magnitude of a column (a sensor, long layout)."""
        best, position, offset = None, 0, 0
        for part in self.parts:
            values = part["value"].where(part["sensor"] == name) if self.spec.layout == "long" else part[name]
            values = values.to_numpy(dtype="float64")
            if not np.isnan(values).all():
                row = int(np.nanargmax(np.abs(values)))
                if best is None or abs(values[row]) > abs(best):
                    best, position = float(values[row]), offset + row
            offset += len(part)
        path, number = self.places([position])[0]
        return path, number, best

    def columns(self, data: pd.DataFrame) -> list[str]:
        """Targets + covariates: checks the requested columns; default targets are the numeric ones.

        A column is numeric when it holds any number; one that also holds cells that are not
        numbers (or are infinite) is an error unless it is left out by data.targets. Columns with
        no numbers at all are ignored, and said so in the report.
        """
        return self.choose(_count_values(data, self.spec))

    def choose(self, counts: pd.Series) -> list[str]:
        """Targets + covariates from the numbers present per column (`counts`, in file order), as `columns` chooses them.

        forecast/fleet_reading.py counts them block by block, without the whole table.
        """
        spec, kind = self.spec, self.kind
        numeric = [name for name in counts.index if counts[name] > 0]
        unread = [name for name in counts.index if counts[name] == 0 and name in self.not_numbers]
        looks_numeric = [name for name in unread if _hint(str(self.not_numbers[name].value), spec)]
        targets = (
            list(spec.targets) if spec.targets is not None else [name for name in [*numeric, *looks_numeric] if name not in spec.covariates]
        )
        for name in [*targets, *spec.covariates]:
            if name not in counts.index:
                raise InputError(
                    f"no {kind} '{shown(name)}' in '{spec.path}' (numeric {kind}s: {_listed(numeric) or 'none'}).\n"
                    "Fix data.targets / data.covariates."
                )
            if name in self.not_numbers:
                raise self._not_a_number(name, counts, targets)
            if name in self.infinite:
                cell = self.infinite[name]
                raise InputError(
                    f"'{cell.path}' line {line(cell.path, cell.row)}, {kind} '{shown(name)}': {_short(cell.value)} is not a "
                    f"finite number ({cell.count:,} such value{'s' * (cell.count > 1)} in the {kind}).\n"
                    "Fix it, or set data.nonfinite=missing to treat infinite values as missing readings."
                )
            if counts[name] == 0:
                raise InputError(
                    f"{kind} '{shown(name)}' in '{spec.path}' has no values (all missing).\n"
                    "Leave it out of data.targets / data.covariates, or check data.na_values."
                )
        both = [name for name in targets if name in spec.covariates]
        if both or not targets:
            problem = (
                f"{kind} '{shown(both[0])}' is both a target and a covariate"
                if both
                else f"no numeric {kind} is left to forecast (without numbers: {_listed(unread) or 'none'})"
            )
            raise InputError(
                f"'{spec.path}': {problem}.\nFix data.targets / data.covariates, or check data.decimal={spec.decimal!r} and data.na_values."
            )
        used = [*targets, *spec.covariates]
        self.report.targets, self.report.covariates = targets, list(spec.covariates)
        self.report.ignored_columns = [name for name in counts.index if counts[name] == 0 and name not in used]
        self.report.missing_codes = sum(self.coded[name] for name in used)
        self.report.nonfinite_values = sum(self.nonfinite[name] for name in used)
        return used

    def _not_a_number(self, name: str, counts: pd.Series, targets: list[str]) -> InputError:
        spec, kind, cell = self.spec, self.kind, self.not_numbers[name]
        fix = _hint(str(cell.value), spec)
        if fix is None:
            others = [other for other in targets if other != name]
            fix = (
                "add it to data.na_values if it marks a missing reading, check "
                f"data.decimal={spec.decimal!r} and data.sep={spec.sep!r}"
                + (f", or leave the {kind} out: data.targets=[{','.join(map(shown, others))}]" if others else "")
            )
        numbers = f", {counts[name]:,} numbers" if counts[name] else ", no numbers"
        return InputError(
            f"'{cell.path}' line {line(cell.path, cell.row)}, {kind} '{shown(name)}': {_short(cell.value)} is not a number "
            f"({cell.count:,} such value{'s' * (cell.count > 1)} in the {kind}{numbers}).\nFix it, or {fix}."
        )


def read(spec: CsvSpec, report: DataReport, ids: list[str] = ()) -> Intake:
    """Reads every file of report.files into one Intake; `ids`: id columns kept as text (intake.id_parts), not as readings."""
    intake = Intake(spec, report, ids=list(ids))
    for path in report.files:
        part, kept = _read_file(path, intake)
        intake.parts.append(part)
        intake.sources.append((path, len(part), kept))
    return intake


def _read_file(path: str, intake: Intake) -> tuple[pd.DataFrame, np.ndarray | None]:
    """One file -> (frame of float64 values indexed by timestamp, raw rows kept or None for all).

    A wide frame that keeps every row wraps the (columns x rows) block filled here; that block is
    added to intake.blocks, so that later stages may write into it instead of copying it.
    """
    spec, report = intake.spec, intake.report
    encoding = sniff.encoding(path, spec)
    columns = _header(path, spec, encoding)
    stamp_columns = _timestamp_columns(columns, path, spec)
    names = [name for name in columns if name not in stamp_columns and name not in intake.ids]
    dtype = dict.fromkeys(stamp_columns, "str") if len(stamp_columns) == 2 or spec.time_format else {}
    for name in intake.ids:
        if name not in columns:
            raise InputError(
                f"'{path}' has no id column '{shown(name)}' (columns: {_listed(columns)}).\nSet data.series_column to its id column(s)."
            )
        dtype[name] = "str"
    if spec.layout == "long":
        for name, setting in ((spec.sensor_column, "sensor_column"), (spec.value_column, "value_column")):
            if name not in columns:
                raise InputError(
                    f"'{path}' has no column '{shown(name)}' (columns: {_listed(columns)}).\n"
                    f"Set data.{setting} to the right column, or data.layout=wide."
                )
        names, dtype[spec.sensor_column] = [spec.value_column], "str"
    raw = _read_csv(path, spec, intake.text_codes, dtype, encoding)
    if raw.empty:
        raise InputError(f"'{path}' has a header but no rows.\nAdd readings, or leave the file out of data.path.")
    report.rows_read += len(raw)
    stamps = _parse_timestamps(raw, stamp_columns, path, spec)
    block = np.empty((len(names), len(raw)))  # one row per column, filled in place
    sensors = raw[spec.sensor_column].to_numpy() if spec.layout == "long" else None
    for values, name in zip(block, names):
        numbers, failed = _numbers(raw[name], spec)
        values[:] = numbers
        hits = np.isin(values, intake.number_codes) if intake.number_codes else None
        if hits is not None and hits.any():  # a full masked pass only where a code is present
            values[hits] = np.nan
            _count(intake.coded, hits, sensors, name)
        infinite = np.isinf(values)
        if infinite.any() and spec.nonfinite == "missing":
            values[infinite] = np.nan
            _count(intake.nonfinite, infinite, sensors, name)
        elif infinite.any():
            _note(intake.infinite, infinite, sensors, name, path, raw[name])
        if failed.any():
            _note(intake.not_numbers, failed, sensors, name, path, raw[name])
    if spec.layout == "long":
        frame = pd.DataFrame({"sensor": raw[spec.sensor_column].array, "value": block[0]}, index=stamps)
    else:
        frame = pd.DataFrame(block.T, index=stamps, columns=names, copy=False)
    unusable = stamps.isna() | (raw[spec.sensor_column].isna().to_numpy() if spec.layout == "long" else False)
    unusable |= raw[intake.ids].isna().any(axis=1).to_numpy() if intake.ids else False
    if not unusable.any():
        intake.blocks += [block] if spec.layout == "wide" else []
        intake.id_parts += [raw[intake.ids]] if intake.ids else []
        return frame, None
    readings = raw.loc[unusable, names].notna().any(axis=1).to_numpy()
    if readings.any():
        row = np.flatnonzero(unusable)[np.argmax(readings)]
        what = "timestamp" if pd.isna(stamps[row]) else "sensor id" if spec.layout == "long" else "device id"
        raise InputError(f"'{path}' line {line(path, row)} has a reading but no {what}.\nFix or remove that row.")
    report.rows_dropped[_EMPTY_ROWS] = report.rows_dropped.get(_EMPTY_ROWS, 0) + int(unusable.sum())
    intake.id_parts += [raw.loc[~unusable, intake.ids]] if intake.ids else []
    return frame[~unusable], np.flatnonzero(~unusable)


def _by_key(mask: np.ndarray, sensors: np.ndarray | None, name: str):
    """(column or sensor, rows) of the True cells of a mask: one column (wide), or per sensor (long)."""
    if sensors is None:
        yield name, np.flatnonzero(mask)
        return
    known = mask & pd.notna(sensors)  # rows without a sensor id are refused or dropped later
    for sensor in pd.unique(sensors[known]):
        yield sensor, np.flatnonzero(known & (sensors == sensor))


def _count(counter: Counter, mask: np.ndarray, sensors: np.ndarray | None, name: str) -> None:
    for key, rows in _by_key(mask, sensors, name):
        counter[key] += rows.size


def _note(cells: dict, mask: np.ndarray, sensors: np.ndarray | None, name: str, path: str, column: pd.Series) -> None:
    """Counts a column's failing cells, remembering the first one (file, row, value)."""
    for key, rows in _by_key(mask, sensors, name):
        if key in cells:
            cells[key].count += rows.size
        else:
            cells[key] = Cell(path, int(rows[0]), column.iloc[rows[0]], rows.size)


def _header(path: str, spec: CsvSpec, encoding: str) -> list[str]:
    """Column names as pandas names them; a name written twice in the header is an error."""
    options = {"sep": spec.sep, "encoding": encoding, "engine": "c"}
    try:
        columns = list(pd.read_csv(path, nrows=0, **options).columns)
        written = pd.read_csv(path, nrows=1, header=None, dtype=str, keep_default_na=False, **options).iloc[0].tolist()
    except pd.errors.EmptyDataError:
        raise InputError(
            f"'{path}' is empty; expected a header line and rows of readings.\nFix the file, or leave it out of data.path."
        ) from None
    except UnicodeDecodeError as error:
        with open(path, "rb") as file:
            raise sniff.undecodable(path, file.read(), error, encoding, "data.encoding to the file's encoding") from None
    except pd.errors.ParserError as error:
        raise _irregular(path, spec, error) from None
    seen: dict[str, int] = {}
    for position, name in enumerate(written):
        if name.strip() and name in seen:
            raise InputError(
                f"'{path}': the header names column '{shown(name)}' twice (columns {seen[name] + 1} and {position + 1}).\n"
                "Rename one of them so that every column name is unique."
            )
        seen[name] = position
    return columns


def _irregular(path: str, spec: CsvSpec, error: Exception) -> InputError:
    return InputError(
        f"'{path}' is not a regular CSV table: {str(error).split('C error: ')[-1].strip()}.\n"
        f"Every row needs one field per column; check data.sep={spec.sep!r}."
    )


def _timestamp_columns(columns: list[str], path: str, spec: CsvSpec) -> list[str]:
    if spec.timestamp is not None or spec.date_column is not None:
        names = [spec.timestamp] if spec.timestamp is not None else [spec.date_column, spec.time_column]
        missing = [name for name in names if name not in columns]
        if not missing:
            return names
        found = f"no column '{shown(missing[0])}'"
    else:
        lower = {name.strip().lower(): name for name in reversed(columns)}
        first = next((name for name in columns if name.strip().lower() in _TIMESTAMP_NAMES), None)
        if first is not None:
            pair = [lower.get("date"), lower.get("time")]
            return pair if first.strip().lower() in ("date", "time") and all(pair) else [first]
        found = "no timestamp column"
    other = next((sep for sep in ";,\t|" if sep != spec.sep and len(columns) == 1 and sep in columns[0]), None)
    fix = (
        f'The header looks separated by {other!r}: set "data.sep={other!r}" (quoted so that Hydra reads it).'
        if other
        else "Set data.timestamp=NAME, or data.date_column and data.time_column."
    )
    raise InputError(f"'{path}' has {found} (columns: {_listed(columns)}).\n{fix}")


def _listed(columns: list[str]) -> str:
    text = ", ".join(shown(name) if len(shown(name)) <= 40 else shown(name)[:36] + "..." for name in columns[:12])
    return text + (f", ... ({len(columns)} in all)" if len(columns) > 12 else "")


def shown(name) -> str:
    """A column or sensor name as messages show it: as written, escaped where it holds a line break or control character."""
    text = str(name)
    return text if text.isprintable() else repr(text)[1:-1]


def _short(value, width: int = 60) -> str:
    """repr of a cell or name, cut to `width` characters."""
    text = repr(value)
    return text if len(text) <= width else f"{text[: width - 4]}...' ({len(str(value)):,} characters)"


# --- values --------------------------------------------------------------------------------------


def _read_csv(path: str, spec: CsvSpec, text_codes: list[str], dtype: dict, encoding: str) -> pd.DataFrame:
    options = {"sep": spec.sep, "decimal": spec.decimal, "na_values": text_codes, "dtype": dtype or None, "encoding": encoding}
    try:
        try:
            return _plain_but_numbers(pd.read_csv(path, engine="pyarrow", dtype_backend="pyarrow", **options))
        except (ValueError, NotImplementedError, pa.ArrowException):  # rows or options pyarrow rejects; the C engine names the line
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)  # every row longer than the header: no silent shift
                return pd.read_csv(path, engine="c", index_col=False, **options)
    except pd.errors.ParserWarning:
        raise InputError(
            f"'{path}': its rows have more fields than its header line.\n"
            f"Every row needs one field per column; check data.sep={spec.sep!r} and the header."
        ) from None
    except UnicodeDecodeError as error:
        if encoding == "utf-8" and spec.encoding is None:
            fallback = sniff.fallback(path)
            if fallback != encoding:
                return _read_csv(path, spec, text_codes, dtype, fallback)
        with open(path, "rb") as file:
            raise sniff.undecodable(path, file.read(), error, encoding, "data.encoding to the file's encoding") from None
    except pd.errors.ParserError as error:
        raise _irregular(path, spec, error) from None


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


def _numbers(column: pd.Series, spec: CsvSpec) -> tuple[np.ndarray, np.ndarray]:
    """float64 values of a column as read, and where a present value is not a number."""
    if is_numeric_dtype(column) or is_bool_dtype(column):
        arrow = {"na_value": np.nan} if isinstance(column.dtype, pd.ArrowDtype) else {}  # nulls -> NaN
        return column.to_numpy(dtype="float64", **arrow), np.zeros(len(column), bool)
    if is_datetime64_any_dtype(column):
        return np.full(len(column), np.nan), column.notna().to_numpy()
    present = column.notna().to_numpy()
    text = column.astype("str").str.strip()
    if spec.thousands is not None:
        text = text.str.replace(spec.thousands, "", regex=False)
    if spec.decimal != ".":
        text = text.str.replace(spec.decimal, ".", regex=False)
    numbers = pd.to_numeric(text.where(present), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    failed = np.isnan(numbers) & present & (text != "").to_numpy()
    if failed.any():  # digits beyond what pandas parses (4,300) are still a number
        plain = failed & text.str.fullmatch(_PLAIN_NUMBER).fillna(False).to_numpy(dtype=bool)
        numbers = np.array(numbers)
        numbers[plain] = [float(value) for value in text[plain]]
        failed &= ~plain
    return numbers, failed


def _hint(value: str, spec: CsvSpec) -> str | None:
    """The setting that would read a cell as a number, when it looks like one in another convention."""
    value = value.strip()
    grouped = _GROUPED.match(value)
    if grouped and spec.thousands is None and grouped["sep"] != spec.decimal:
        return f'set "data.thousands={grouped["sep"]!r}" (quoted for Hydra) to read thousands separators'
    if _DECIMAL_COMMA.match(value) and spec.decimal != ",":
        return "set data.decimal=',' (with data.sep=';' for most European exports) to read decimal commas"
    return None


def _count_values(data: pd.DataFrame, spec: CsvSpec) -> pd.Series:
    """Numbers present per column in file order (per sensor in the long layout, sorted by id)."""
    if spec.layout == "long":
        return data.groupby("sensor")["value"].count()
    values = data.to_numpy(dtype="float64")  # [rows, columns]: a view when one block holds them
    return pd.Series([len(data) - np.count_nonzero(np.isnan(column)) for column in values.T], index=data.columns, dtype="int64")


def _number(code) -> float | None:
    """The numeric value of a missing-value code, or None for a text code."""
    try:
        value = float(code)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(value) else value


# --- timestamps ----------------------------------------------------------------------------------


def _parse_timestamps(raw: pd.DataFrame, names: list[str], path: str, spec: CsvSpec) -> pd.DatetimeIndex:
    """Timestamps of every raw row (NaT where missing), in nanoseconds, localised per spec.timezone."""
    column = raw[names[0]].str.strip() + " " + raw[names[1]].str.strip() if len(names) == 2 else raw[names[0]]
    stamps = pd.DatetimeIndex(column) if is_datetime64_any_dtype(column) else _to_datetime(column, path, spec)
    try:
        stamps = stamps.as_unit("ns")
    except OutOfBoundsDatetime:
        row = int(np.argmax((stamps > pd.Timestamp.max) | (stamps < pd.Timestamp.min)))
        raise InputError(
            f"'{path}' line {line(path, row)}: timestamp {stamps[row]} is outside the years 1677-2262 a series can span.\n"
            "Fix that timestamp (a typo in the year?) or remove the row."
        ) from None
    if stamps.tz is not None:
        return stamps.tz_convert(spec.timezone or "UTC")
    if spec.timezone is None:
        return stamps
    try:
        return stamps.tz_localize(spec.timezone, ambiguous="infer", nonexistent="shift_forward")
    except ValueError:
        unclear = stamps.tz_localize(spec.timezone, ambiguous="NaT", nonexistent="shift_forward").isna() & stamps.notna()
        row = int(np.argmax(unclear))
        raise InputError(
            f"'{path}' line {line(path, row)}: local time {stamps[row]} is ambiguous in {spec.timezone} "
            "(clocks go back) and the row order does not tell which is meant.\n"
            "Export timestamps in UTC or with UTC offsets, or set data.timezone=null."
        ) from None


def _to_datetime(column: pd.Series, path: str, spec: CsvSpec) -> pd.DatetimeIndex:
    text = column.astype("str").where(column.notna())
    first = text.first_valid_index()
    if first is None:
        return pd.DatetimeIndex(np.full(len(text), np.datetime64("NaT", "ns")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fmt = spec.time_format or guess_datetime_format(text[first])
    if fmt is None:
        raise InputError(
            f"'{path}' line {line(path, first)}: cannot tell the format of timestamp {_short(text[first])}.\n"
            "Set data.time_format to its strftime format, e.g. '%d.%m.%Y %H:%M'."
        )
    try:
        try:
            stamps = pd.to_datetime(text, format=fmt, errors="coerce")
        except ValueError:  # mixed UTC offsets, e.g. across a daylight-saving change
            stamps = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    except ValueError as error:
        raise InputError(
            f"'{path}': cannot read timestamps with format {fmt!r} ({error}).\n"
            "Set data.time_format to a strftime format such as '%Y-%m-%d %H:%M'."
        ) from None
    failed = (stamps.isna() & text.notna()).to_numpy()
    if failed.any():
        row = int(np.argmax(failed))
        why = "data.time_format" if spec.time_format else f"the format guessed from line {line(path, first)}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            example = guess_datetime_format(text.iloc[row].strip(), dayfirst=True) or "%Y-%m-%d %H:%M"
        raise InputError(
            f"'{path}' line {line(path, row)}: timestamp {_short(text.iloc[row])} does not match {why} ({fmt!r}).\n"
            f"Fix the value, or set data.time_format to the format of the file, e.g. {example!r}."
        )
    return pd.DatetimeIndex(stamps)


def line(path: str, row: int) -> int:
    """1-based line of data row `row` (0-based), counting the header and skipping blank lines as the reader does."""
    seen = 0
    with open(path, "rb") as file:
        for number, text in enumerate(file, 1):
            seen += bool(text.strip())
            if seen == row + 2:
                return number
    return row + 2
