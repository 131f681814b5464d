"""Frame stage: sensor CSV export(s) -> one regular, validated pandas DataFrame and a data report.

`load_frame(spec)` reads a file, a glob or a folder of CSV files (in name order, as one series):

1. checks the settings (here), before any file is opened;
2. reads each file (forecast/reading.py): recognises what it is (forecast/sniff.py), parses the timestamps, turns
   values into float64, missing-value codes into NaN and refuses cells that are not numbers or
   not finite in the columns used; resolves the target and covariate columns;
3. regularises (forecast/regular.py): merges rows that share a timestamp (spec.duplicates within
   a file, spec.overlap across files), pivots a long layout, checks the size of the grid, resamples
   to a regular step with spec.aggregation, refuses values too large to standardise, masks stuck
   values, drops incomplete rows at either end and interpolates interior gaps of up to
   spec.max_gap steps (longer ones stay NaN, or fail with spec.long_gaps="fail").

Every problem with the input raises InputError naming the file, the line or column, and the
setting (under `data.`) that fixes it. The DataReport says what was found and changed.
"""

from __future__ import annotations

import codecs
import numbers
import os
import sys
from dataclasses import asdict, dataclass, field
from glob import glob

import pandas as pd
from pandas.tseries.frequencies import to_offset

from forecast import reading, regular
from forecast.errors import InputError

_CHOICES = {
    "layout": ("wide", "long"),
    "aggregation": ("mean", "sum", "first", "last", "min", "max", "median"),
    "duplicates": ("mean", "first", "last", "error"),
    "overlap": ("error", "first", "last", "mean"),
    "nonfinite": ("error", "missing"),
    "long_gaps": ("mask", "fail"),
}


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
        thousands: Thousands separator inside numbers, e.g. "," for "10,037.7" (quoted when it is
            also the field separator). None: numbers have none.
        encoding: Text encoding of the files. None: UTF-8, or Latin-1 for a file that is not UTF-8.
        na_values: Missing-value codes, numbers or strings, e.g. [-200, -9999, "NA"]; a numeric
            code also matches "-200.0".
        targets: Columns to forecast. None: every numeric column that is not a covariate.
        covariates: Input-only columns.
        freq: pandas offset alias of the step ("30min", "1h"). None: the most common step, on
            a grid through the first timestamp (a given freq is aligned to midnight instead).
        aggregation: How readings within one step are combined: mean, sum, first, last, min,
            max or median.
        duplicates: Rows of one file sharing a timestamp: mean, first or last (the first or last
            reading of each column), or error.
        overlap: A timestamp in more than one file whose readings differ: error, or first, last
            (the file first or last in name order) or mean. Identical readings are always merged.
        nonfinite: Infinite values (inf, -inf, Infinity, or a number too large for float64):
            error, or missing (treated as missing readings and counted in the report).
        max_grid_factor: The regular grid may have at most this many steps per timestamp read
            (plus 1,000); a larger one (a typo in a year, a step far finer than the readings) is
            refused before it is built.
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
    thousands: str | None = None
    encoding: str | None = None
    na_values: list = field(default_factory=list)
    targets: list[str] | None = None
    covariates: list[str] = field(default_factory=list)
    freq: str | None = None
    aggregation: str = "mean"
    duplicates: str = "mean"
    overlap: str = "error"
    nonfinite: str = "error"
    max_grid_factor: float = 10
    max_gap: int = 3
    long_gaps: str = "mask"
    stuck_steps: int | None = None

    def __post_init__(self):
        if self.sep in ("\\t", "tab"):  # how a tab arrives from the command line
            self.sep = "\t"
        if isinstance(self.na_values, (str, int, float)):
            self.na_values = [self.na_values]
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        if isinstance(self.covariates, str):
            self.covariates = [self.covariates]


@dataclass
class DataReport:
    """What load_frame found and changed; counts are cells unless they say rows or steps.

    missing_codes counts numeric-code matches in the used columns (text codes are dropped by
    the reader like blanks); nonfinite_values the infinite cells treated as missing; overlaps the
    timestamps read from more than one file (overlap_conflicts: with differing readings);
    missing_values counts the NaN cells of the regular series just before gap filling, and
    missing_by_column the same per column, of grid_steps steps (before the edges are trimmed);
    longest_gap is {"steps", "column", "start"} or None.
    """

    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_dropped: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    duplicate_policy: str = "mean"
    overlaps: int = 0
    overlap_conflicts: int = 0
    overlap_policy: str = "error"
    missing_codes: int = 0
    nonfinite_values: int = 0
    missing_values: int = 0
    steps_inserted: int = 0
    values_interpolated: int = 0
    values_masked: int = 0
    stuck_values: int = 0
    longest_gap: dict | None = None
    grid_steps: int = 0
    missing_by_column: dict[str, int] = field(default_factory=dict)
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
        if self.overlaps:
            kept = f"{self.overlap_conflicts:,} differing, kept {self.overlap_policy}" if self.overlap_conflicts else "identical"
            found += [f"{_plural(self.overlaps, 'timestamp')} in more than one file ({kept})"]
        found += [
            _plural(n, noun)
            for n, noun in (
                (self.missing_codes, "missing-code value"),
                (self.nonfinite_values, "infinite value"),
                (self.stuck_values, "stuck value"),
            )
            if n
        ]
        found += [f"{n:,} {reason if n != 1 else reason.replace('rows', 'row')} dropped" for reason, n in self.rows_dropped.items()]
        gap, names = self.longest_gap, lambda columns: ", ".join(map(reading.shown, columns))
        return [
            f"read {_plural(self.rows_read, 'row')} from {source}; " + ("; ".join(found) or "no duplicates, missing codes or stuck values"),
            f"{_plural(self.rows, 'row')} every {self.freq} from {self.start} to {self.end}; {_plural(self.steps_inserted, 'step')} "
            f"inserted, {_plural(self.values_interpolated, 'value')} interpolated, {self.values_masked:,} masked"
            + (f"; longest gap {_plural(gap['steps'], 'step')} in '{gap['column']}' from {gap['start']}" if gap else ""),
            f"targets: {names(self.targets)}; covariates: {names(self.covariates) or 'none'}"
            + (f"; ignored: {names(self.ignored_columns)}" if self.ignored_columns else ""),
        ]


def load_frame(spec: CsvSpec) -> tuple[pd.DataFrame, DataReport]:
    """Reads spec.path into one regular series and reports what was found and changed.

    Returns a frame with a sorted, regular DatetimeIndex named "timestamp" (tz-aware when
    spec.timezone is set or the stamps carry UTC offsets; index.freq set), columns = targets then
    covariates as float64, finite, NaN only where a long gap is masked. Raises InputError for bad
    input. Columns left out because they hold no numbers are named on stderr.
    """
    offset = check_spec(spec)
    report = DataReport(files=_find_files(spec.path), duplicate_policy=spec.duplicates, overlap_policy=spec.overlap)
    intake = reading.read(spec, report)
    data = intake.data()
    columns = intake.columns(data)
    frame = regular.regularise(intake, data, columns, offset)
    if report.ignored_columns:
        names = ", ".join(f"'{reading.shown(name)}'" for name in report.ignored_columns)
        print(f"note: ignored {intake.kind}s with no numbers: {names} (data report: ignored_columns)", file=sys.stderr)
    return frame, report


def check_spec(spec: CsvSpec) -> pd.DateOffset | None:
    """Validates the settings that need no data; returns the offset of spec.freq if given."""
    for name, valid in _CHOICES.items():
        if getattr(spec, name) not in valid:
            raise InputError(f"data.{name}={getattr(spec, name)!r} is not valid (reading '{spec.path}').\nUse one of: {', '.join(valid)}.")
    _check_marks(spec)
    if (spec.date_column is None) != (spec.time_column is None):
        raise InputError(
            f"data.date_column and data.time_column go together (reading '{spec.path}').\n"
            "Set both, or set data.timestamp to the single timestamp column."
        )
    for name, value in (("max_gap", spec.max_gap), ("stuck_steps", spec.stuck_steps), ("max_grid_factor", spec.max_grid_factor)):
        kind = numbers.Real if name == "max_grid_factor" else numbers.Integral
        if not isinstance(value, kind) or isinstance(value, bool):
            if value is not None or name != "stuck_steps":
                raise InputError(
                    f"data.{name}={value!r} is not a {'number' if kind is numbers.Real else 'whole number of steps'} "
                    f"(reading '{spec.path}').\nFix data.{name}; its default is {getattr(CsvSpec, name)!r}."
                )
    if spec.max_gap < 0 or (spec.stuck_steps is not None and spec.stuck_steps < 1):
        raise InputError(
            f"data.max_gap={spec.max_gap} must be >= 0 and data.stuck_steps={spec.stuck_steps} >= 1 "
            f"(reading '{spec.path}').\nFix them; data.stuck_steps=null turns the stuck-sensor check off."
        )
    if not spec.max_grid_factor >= 1:
        raise InputError(f"data.max_grid_factor={spec.max_grid_factor} must be at least 1 (steps per timestamp read).")
    if spec.encoding is not None:
        try:
            codecs.lookup(spec.encoding)
        except (LookupError, TypeError):
            raise InputError(
                f"data.encoding={spec.encoding!r} is not a known text encoding.\n"
                "Use e.g. utf-8, latin-1, cp1252 or utf-16, or data.encoding=null."
            ) from None
    if spec.timezone is not None:
        try:
            pd.Timestamp("2000-01-01").tz_localize(spec.timezone)
        except (KeyError, ValueError, TypeError):
            raise InputError(
                f"data.timezone={spec.timezone!r} is not a known time zone (reading '{spec.path}').\n"
                "Use an IANA name such as 'Europe/Berlin' or 'UTC'."
            ) from None
    try:
        offset = None if spec.freq is None else to_offset(spec.freq)
    except (ValueError, TypeError):
        raise InputError(
            f"data.freq={spec.freq!r} is not a pandas offset alias (reading '{spec.path}').\n"
            "Use e.g. '10min', '30min', '1h' or '1D', or data.freq=null to infer it."
        ) from None
    if offset is not None and offset.n <= 0:
        raise InputError(
            f"data.freq={spec.freq!r} is not a positive step (reading '{spec.path}').\n"
            "Use e.g. '10min', '30min', '1h' or '1D', or data.freq=null to infer it."
        )
    return offset


def _check_marks(spec: CsvSpec) -> None:
    """The separator, decimal mark and thousands separator: one character each, and not each other."""
    examples = {"sep": "',' ';' '|' or a tab", "decimal": "'.' or ','", "thousands": "',' '.' or an apostrophe"}
    for name, mark in (("sep", spec.sep), ("decimal", spec.decimal), ("thousands", spec.thousands)):
        if name == "thousands" and mark is None:
            continue
        if not isinstance(mark, str) or len(mark) != 1 or mark.isalnum() or mark in '"\r\n' or (name != "sep" and mark == "\t"):
            raise InputError(
                f"data.{name}={mark!r} is not valid (reading '{spec.path}'): it must be one character, such as "
                f"{examples[name]}.\nFix data.{name}; on the command line quote it: \"data.{name}=';'\"."
            )
    if spec.decimal == spec.sep:
        raise InputError(
            f"data.decimal and data.sep are both {spec.sep!r} (reading '{spec.path}').\n"
            "European exports use data.sep=';' with data.decimal=','."
        )
    if spec.thousands is not None and spec.thousands == spec.decimal:
        raise InputError(
            f"data.thousands and data.decimal are both {spec.decimal!r} (reading '{spec.path}').\n"
            "Set data.thousands to the other mark, or data.thousands=null."
        )


def _find_files(path: str) -> list[str]:
    if os.path.isdir(path):
        files, why = [os.path.join(path, name) for name in os.listdir(path) if name.lower().endswith(".csv")], "no .csv files in the folder"
    elif any(char in path for char in "*?["):
        files, why = glob(path), "the pattern matches no file"
    else:
        files, why = [path], "no such file"
    files = sorted(name for name in files if os.path.isfile(name))
    if not files:
        raise InputError(
            f"no CSV file at '{path}' ({why}).\nSet data.path=... to a CSV file, a folder of CSV files or a glob such as 'drops/*.csv'."
        )
    return files


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' * (n != 1)}"
