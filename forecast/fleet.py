"""Fleet ingestion: many devices' readings -> one stacked float32 array, each device regular on its own span.

`load_fleet(spec, series_column, need)` reads either layout of a fleet export:

- a long file (or glob of files): a timestamp, one or more id columns (`data.series_column`, a name or
  a list such as [site, device]) and one or more reading columns on every row;
- a folder with one CSV per device (timestamp and reading columns); the file name (without .csv)
  is the id, under the first name of `data.series_column`.

Files are streamed in pieces by forecast/fleet_reading.py, with the decisions of forecast/reading.py
(file sniffing, encodings, header, timestamps, numbers, missing codes, infinite values): each piece
of rows is compacted as it arrives (rows sorted by device; timestamps as int32 seconds, readings as
float32: 12 bytes a row for two readings), so the whole file is never held as a table. Where a file
needs what only reading.py does (timestamps in other formats, text to parse as numbers, ...; see
fleet_reading's docstring) or an error must name a line, the files are read whole by reading.py
instead (`_whole_table`), with the same results. Then, vectorised over a group of devices at a time
(a sort by device and time only where the rows are not in order; no per-device pandas work), in two
passes: a survey of every device's timestamps (steps 1-4), then the stack filled group by group while
the pieces are freed (steps 1-3 again, with the readings; step 5 on the stack):

1. rows of one device sharing a timestamp are merged by data.duplicates (error names the lines);
2. each device's step is inferred (the most common one between its readings); with data.freq=null
   the fleet's step is the most common one, and devices that read at another step are left out;
   with data.freq set, finer readings are combined by data.aggregation, coarser devices left out;
3. each device gets its own grid from its first to its last reading (late installs and
   decommissions cost nothing), checked against data.max_grid_factor;
4. devices whose grid is shorter than `need` rows (lookback + horizon) are left out;
5. values are refused when too large (regular._check_magnitude), stuck runs are masked
   (regular._mask_stuck), interior gaps of up to data.max_gap steps interpolated
   (regular.interpolate) and longer ones masked (or refused with data.long_gaps=fail). A sensor's
   missing stretch before its first or after its last reading on the device stays NaN.

Interface (what later stages use):

    Fleet.values   [R, C] float32: device d's grid is rows start[d] .. start[d]+length[d]-1; one NaN
                   row before every device and after the last, so no run, gap or window crosses two
                   devices. Columns: targets then covariates.
    Fleet.start, Fleet.length, Fleet.first  [D] int64: first row, rows, first timestamp (ns, UTC)
    Fleet.step (ns), Fleet.freq ("1h"), Fleet.tz, Fleet.ids (DataFrame [D], one column per id column)
    Fleet.span: (first, last + step) ns of the whole fleet; with load_fleet(share=(rank, world)) a
                   process holds only its share of devices (those numbered rank modulo world, in order of
                   first appearance; the others' readings are dropped block by block as they are parsed,
                   only their timestamps kept) but the same span (the same cuts) and the same status for
                   every device in the report; the report's cleaning counts cover its own devices
    Fleet.static (DataFrame [D], data.static_columns as text, or None), Fleet.static_values (each static
                   column's values over every kept device of the whole fleet, sorted)
    Fleet.rows_before(stamp_ns) [D], Fleet.frame(d) (device d as a regular DataFrame), Fleet.index(d)
    FleetReport: totals (reading's DataReport), `devices` (one row per device found, kept or
    left out and why), lines() for the console, to_dict() for data_report.json.

Devices left out are always named in the report (the first ten, then a count) and listed in full
in `FleetReport.devices` (status column).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from forecast import fleet_reading, reading, regular
from forecast.errors import InputError
from forecast.frame import CsvSpec, DataReport, _find_files, check_spec

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_WORST = 5  # devices named in the report's worst-offender lines
_NAMED = 10  # devices left out named by id before a count
_GROUP_ROWS = 1 << 16  # the fewest rows a group of devices of the streamed path holds


@dataclass
class FleetReport:
    """What load_fleet found and changed: fleet totals and one row per device.

    data: the reading totals (rows, files, missing codes, duplicates, ...) as a single series has them.
    devices: one row per device found: its id column(s), readings, first, last, rows (grid steps),
        duplicates, inserted (grid steps without a reading), interpolated, masked, stuck, longest_gap
        (steps), status ("kept" or why it was left out).
    """

    data: DataReport
    devices: pd.DataFrame = field(default_factory=pd.DataFrame)
    id_columns: list[str] = field(default_factory=list)
    reader: str = "streamed"  # or "whole table": the path that read the files (module docstring)

    @property
    def freq(self) -> str:
        return self.data.freq

    @property
    def kept(self) -> pd.DataFrame:
        return self.devices[self.devices["status"] == "kept"]

    @property
    def left_out(self) -> pd.DataFrame:
        return self.devices[self.devices["status"] != "kept"]

    def name(self, row) -> str:
        return "/".join(reading.shown(row[c]) for c in self.id_columns)

    def lines(self) -> list[str]:
        d, kept, out = self.data, self.kept, self.left_out
        kept = kept.reindex(columns=[*kept.columns, *(c for c in ("masked", "stuck", "interpolated") if c not in kept)], fill_value=0)
        lines = [
            f"read {d.rows_read:,} rows from {d.files[0] if len(d.files) == 1 else f'{len(d.files):,} files'}: "
            f"{len(self.devices):,} devices, {len(kept):,} kept, {len(out):,} left out; every {d.freq}",
            f"kept: {int(kept['readings'].sum()):,} readings on {int(kept['rows'].sum()):,} grid steps; "
            f"{int(kept['duplicates'].sum()):,} duplicate timestamps (kept {d.duplicate_policy}), {d.missing_codes:,} missing codes, "
            f"{int(kept['stuck'].sum()):,} stuck values, {int(kept['interpolated'].sum()):,} interpolated, "
            f"{int(kept['masked'].sum()):,} masked",
            f"targets: {', '.join(map(reading.shown, d.targets))}; covariates: {', '.join(map(reading.shown, d.covariates)) or 'none'}",
        ]
        if len(kept):
            share = (kept["masked"] + kept["stuck"]) / kept["rows"].clip(lower=1)
            for _, row in kept.loc[share.sort_values(ascending=False).index[:_WORST]].iterrows():
                if row["masked"] + row["stuck"] == 0:
                    break
                lines.append(
                    f"  worst: {self.name(row)}: {row['masked']:,} masked, {row['stuck']:,} stuck of {row['rows']:,} steps "
                    f"(longest gap {row['longest_gap']:,} steps), {row['first']} to {row['last']}"
                )
        for status, group in out.groupby("status", sort=False):
            names = ", ".join(self.name(row) for _, row in group.iloc[:_NAMED].iterrows())
            more = f" and {len(group) - _NAMED:,} more" if len(group) > _NAMED else ""
            lines.append(f"  left out ({status}): {names}{more}")
        return lines

    def to_dict(self) -> dict:
        out = self.left_out
        return {
            **self.data.to_dict(),
            "devices": len(self.devices),
            "devices_kept": len(self.kept),
            "devices_left_out": {self.name(row): row["status"] for _, row in out.iterrows()},
        }


@dataclass
class Fleet:
    """Every kept device's regular grid, stacked (see the module docstring)."""

    values: np.ndarray  # [R, C] float32
    start: np.ndarray  # [D] first row of each device
    length: np.ndarray  # [D] rows of each device
    first: np.ndarray  # [D] ns timestamp of each device's first row
    step: int  # ns
    span: tuple[int, int]  # [first, last + step) in ns of the whole fleet (every rank's devices)
    freq: str
    tz: str | None
    ids: pd.DataFrame  # [D] id columns
    targets: list[str]
    covariates: list[str]
    report: FleetReport
    static: pd.DataFrame | None = None  # [D] static columns (data.static_columns) as text, one value per device; None: none read
    static_values: list[list[str]] = field(default_factory=list)  # each static column's values over every kept device, sorted

    @property
    def columns(self) -> list[str]:
        return self.targets + self.covariates

    @property
    def id_columns(self) -> list[str]:
        return list(self.ids.columns)

    def __len__(self) -> int:
        return len(self.start)

    def rows_before(self, stamp: int) -> np.ndarray:
        """[D] rows of each device whose timestamp is before `stamp` (ns)."""
        return np.clip(-((self.first - stamp) // self.step), 0, self.length)  # ceil((stamp - first) / step)

    def index(self, d: int) -> pd.DatetimeIndex:
        stamps = pd.to_datetime(self.first[d] + self.step * np.arange(self.length[d]), utc=self.tz is not None)
        stamps = stamps.tz_convert(self.tz) if self.tz is not None else stamps
        return pd.DatetimeIndex(stamps, name="timestamp")

    def frame(self, d: int) -> pd.DataFrame:
        """Device d as a regular frame (a view of its rows)."""
        rows = self.values[self.start[d] : self.start[d] + self.length[d]]
        return pd.DataFrame(rows, index=self.index(d), columns=self.columns, copy=False)


def series_columns(value) -> list[str]:
    """data.series_column as a list of names (a string or a list of strings)."""
    names = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise InputError(
            f"data.series_column={value!r} is not a column name or a list of distinct names.\n"
            "Set it to the id column of the devices, e.g. data.series_column=device or data.series_column=[site,device]."
        )
    return names


def static_names(value) -> list[str]:
    """data.static_columns as a list of names (a name, a list of names, or null / [] for none)."""
    names = [] if value is None else [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if names is None or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise InputError(
            f"data.static_columns={value!r} is not a list of distinct column names.\n"
            "Set it to the columns constant per device, e.g. data.static_columns=[site,model], or [] for none."
        )
    return names


def load_fleet(
    spec: CsvSpec,
    id_columns: list[str],
    need: int,
    share: tuple[int, int] | None = None,
    static_columns: list[str] = (),
    *,
    whole: bool = False,
    block_bytes: int = fleet_reading.BLOCK_BYTES,
) -> Fleet:
    """Reads a fleet (long file(s) or a folder with one file per device); see the module docstring.

    static_columns: columns constant per device (site, model, ...), read as text like the ids and kept
    aside (not readings); a column whose value changes within a device is an error naming both.

    share: (rank, world): keep only the devices numbered rank modulo world (devices are numbered in
    order of first appearance); the report, Fleet.span and Fleet.static_values still describe the whole
    fleet, so every rank cuts at the same timestamps.

    whole: read every file whole (forecast/reading.py) instead of in blocks of `block_bytes`
    (forecast/fleet_reading.py); the streamed path falls back to it by itself where it must.
    """
    offset = check_spec(spec)
    if spec.layout != "wide":
        raise InputError(
            f"data.layout={spec.layout} does not apply to a fleet (reading '{spec.path}'): a fleet file has a timestamp, "
            "the id column(s) and one column per reading.\nLeave data.layout=wide and name the id column(s) with data.series_column."
        )
    if offset is not None and not isinstance(offset, pd.offsets.Tick):
        raise InputError(f"data.freq={spec.freq!r}: a fleet needs a fixed step (e.g. 15min, 1h, 1D), not a calendar one.")
    folder = os.path.isdir(spec.path)
    files = _find_files(spec.path)
    static_columns = static_names(static_columns)
    twice = [c for c in static_columns if c in id_columns]
    if twice:
        raise InputError(f"data.static_columns: '{twice[0]}' is an id column (data.series_column).\nLeave it out of data.static_columns.")
    if share is not None and not 0 <= share[0] < share[1]:
        raise ValueError(f"share={share}: a rank from 0 to world - 1")
    if not whole:
        report = DataReport(files=files, duplicate_policy=spec.duplicates, overlap_policy=spec.overlap)
        try:
            read = fleet_reading.stream(spec, report, id_columns, static_columns, folder, share, block_bytes)
            return _streamed(read, offset, need)
        except fleet_reading.Unsupported:
            pass  # what only the whole-table path reads, or an error that names a line: read it whole (fleet_reading's docstring)
    report = DataReport(files=files, duplicate_policy=spec.duplicates, overlap_policy=spec.overlap)
    return _whole_table(spec, report, folder, id_columns, static_columns, offset, need, share)


def _whole_table(spec, report, folder, id_columns, static_columns, offset, need, share) -> Fleet:
    """The fleet from every file read whole by forecast/reading.py, vectorised over every reading at once."""
    intake = reading.read(spec, report, ids=([] if folder else id_columns) + static_columns)
    data = intake.data()
    columns = intake.columns(data)
    names = [c for c in columns if c in id_columns or c in static_columns]
    if names:
        raise InputError(
            f"'{spec.path}': '{names[0]}' is an id column (data.series_column) and a reading.\nFix data.targets / data.covariates."
        )
    codes, ids = _device_codes(intake, folder, id_columns)
    static = _static_values(intake, codes, ids, static_columns) if static_columns else None
    values = (data if list(data.columns) == columns else data[columns]).to_numpy(dtype=np.float64)  # [N, C], a view of the block read
    regular._check_magnitude(values.T, columns, intake)
    with np.errstate(invalid="ignore"):
        largest = np.maximum(np.abs(np.nanmax(values, axis=0)), np.abs(np.nanmin(values, axis=0)))  # [C]
    for c, name in enumerate(columns):
        if largest[c] > _FLOAT32_MAX / 16:
            path, line, value = intake.largest(name)
            raise InputError(
                f"'{path}' line {line}, column '{reading.shown(name)}': {value:g} is too large for the network's float32.\n"
                "Fix the value, or rescale the column to smaller units."
            )
    values = values.astype(np.float32)  # [N, C] as the stack holds them (and as the streamed path merges them)
    time = data.index.asi8  # [N] ns
    tz = None if data.index.tz is None else str(data.index.tz)
    del data
    intake.parts.clear()  # the frames read are no longer needed (messages from here on use intake.sources): free them
    intake.id_parts.clear()
    intake.blocks.clear()
    position = np.arange(len(codes))  # row of each reading in intake.data(), for messages
    if not _sorted(codes, time):
        position = np.lexsort((time, codes))
        codes, time, values = codes[position], time[position], values[position]
    table = pd.DataFrame({c: ids[c].to_numpy() for c in ids.columns})
    codes, time, values, position, table["duplicates"] = _merge_repeats(codes, time, values, position, intake, ids, len(ids), "duplicates")

    devices = len(ids)
    new = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])  # first reading of each device
    table["readings"] = np.diff(np.r_[new, len(codes)])
    step, own = _steps(codes, time, devices, None if offset is None else offset.nanos)
    origin = time[new] if offset is None else time[new] - np.mod(time[new], step)  # a grid through the first reading, else midnight
    table["first"], table["last"] = _stamps(time[new], tz), _stamps(time[np.r_[new[1:], len(codes)] - 1], tz)
    slot, between = np.divmod(time - origin[codes], step)  # grid step of each reading, per device; readings off the grid
    if between.any() or ((slot[1:] == slot[:-1]) & (codes[1:] == codes[:-1])).any():  # readings between grid points
        codes, slot, values, position, _ = _merge_repeats(codes, slot, values, position, intake, ids, devices, "aggregation")
        new = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    last = slot[np.r_[new[1:], len(codes)] - 1]
    table["rows"] = last + 1
    table["inserted"] = table["rows"] - np.diff(np.r_[new, len(codes)])  # grid steps without a reading
    _check_grids(table, intake, position[np.r_[new[1:], len(codes)] - 1], step, list(ids.columns))

    kept, whole, span = _choose_devices(table, own, step, offset, origin, need, share, spec, report, list(ids.columns))
    length = table["rows"].to_numpy()[kept]
    start = 1 + np.r_[0, np.cumsum(length + 1)[:-1]]  # a NaN row before every device
    at = np.full(devices, -1, np.int64)
    at[kept] = start
    rows = at[codes]  # [N] first row of each reading's device in the stack; -1: a device left out
    rows += slot  # the reading's own row
    stack = np.full((int(start[-1] + length[-1] + 1), len(columns)), np.nan, np.float32)  # [R, C]
    if len(kept) == devices:
        stack[rows] = values
    else:
        use = np.isin(codes, kept)
        stack[rows[use]] = values[use]
    del values, rows, slot, between
    fleet = _fleet(stack, start, length, kept, whole, table, origin, step, span, tz, ids, static, spec, report, columns)
    fleet.report.reader = "whole table"
    return fleet


def _choose_devices(table, own, step, offset, origin, need, share, spec, report, id_columns) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Each device's status into the table; (this process's kept devices, every kept device, the fleet's span) or InputError."""
    devices, freq = len(table), _freq_text(step)
    status = np.full(devices, "kept", dtype=object)
    wrong = own != step if offset is None else own > step
    status[wrong] = [f"reads every {_freq_text(s)}, not every {freq}" for s in own[wrong]]
    short = (table["rows"].to_numpy() < need) & ~wrong
    status[short] = f"fewer than lookback + horizon = {need} steps"
    table["status"] = status
    kept = np.flatnonzero(status == "kept")
    report.freq = freq
    if not len(kept):
        raise InputError(
            f"'{spec.path}': no device is left: {len(table):,} devices, {int(wrong.sum()):,} at another step than {freq}, "
            f"{int(short.sum()):,} shorter than lookback + horizon = {need} steps.\nLower data.lookback / data.horizon, or set data.freq.",
            context=FleetReport(report, table, id_columns).lines(),
        )
    span = (int(origin[kept].min()), int((origin[kept] + table["rows"].to_numpy()[kept] * step).max()))  # the whole fleet's
    whole = kept  # every kept device, before a process takes its share: the static columns' values
    if share is not None:
        kept = kept[kept % share[1] == share[0]]  # devices numbered rank modulo world (fleet_reading.py drops the others' readings)
        if not len(kept):
            raise InputError(
                f"'{spec.path}': {share[1]} processes share a fleet of {len(table):,} devices ({len(whole):,} kept); process {share[0]} "
                f"owns none of the kept ones.\nUse fewer processes (trainer.devices), or lower data.lookback / data.horizon."
            )
    return kept, whole, span


def _fleet(stack, start, length, kept, whole, table, origin, step, span, tz, ids, static, spec, report, columns) -> Fleet:
    """The stack cleaned (stuck values, gaps) and wrapped with its devices and report."""
    _clean(stack, start, length, kept, table, step, spec, report, columns, list(ids.columns))
    report.start, report.end = str(table["first"].iloc[kept].min()), str(table["last"].iloc[kept].max())
    report.rows, report.grid_steps = int(length.sum()), int(length.sum())
    fleet_report = FleetReport(report, table, list(ids.columns))
    return Fleet(
        values=stack,
        start=start,
        length=length,
        first=origin[kept],
        step=step,
        span=span,
        freq=report.freq,
        tz=tz,
        ids=ids.iloc[kept].reset_index(drop=True),
        targets=report.targets,
        covariates=report.covariates,
        report=fleet_report,
        static=None if static is None else static.iloc[kept].reset_index(drop=True),
        static_values=[] if static is None else [sorted(set(static[c].iloc[whole])) for c in static.columns],
    )


# --- the streamed path: the pieces of forecast/fleet_reading.py, a group of devices at a time ----------------------------


def _streamed(read: fleet_reading.Stream, offset, need: int) -> Fleet:
    """The fleet from a Stream: a survey of every device (pass 1), then the stack filled group by group (pass 2)."""
    intake, spec, report = read.intake, read.intake.spec, read.intake.report
    columns = _stream_columns(read)
    ids, tz = read.ids(), ((spec.timezone or "UTC") if read.aware else None)
    static = pd.DataFrame({name: [values[c] for values in read.static] for c, name in enumerate(read.static_columns)}, dtype=object)
    static = static if read.static_columns else None  # [D] one value per device and static column
    groups = read.groups(max(_GROUP_ROWS, sum(read.rows) // 256))  # a group's sort and merge copies stay small beside the stack
    table = pd.DataFrame({c: ids[c].to_numpy() for c in ids.columns})
    first, last, own, gaps = _survey(read, groups, table, spec)
    step, own = _fleet_step(own, table["readings"].to_numpy(), gaps, offset)
    origin = first if offset is None else first - np.mod(first, step)
    table["first"], table["last"] = _stamps(first, tz), _stamps(last, tz)
    table["rows"] = (last - origin) // step + 1
    table["inserted"] = 0  # filled in pass 2
    if (table["rows"].to_numpy() > spec.max_grid_factor * table["readings"].to_numpy() + regular._GRID_SLACK).any():
        raise fleet_reading.Unsupported("a grid too long")  # the whole-table path names the line of its last reading
    kept, whole, span = _choose_devices(table, own, step, offset, origin, need, read.share, spec, report, list(ids.columns))
    length = table["rows"].to_numpy()[kept]
    start = 1 + np.r_[0, np.cumsum(length + 1)[:-1]]  # a NaN row before every device
    stack = np.empty((int(start[-1] + length[-1] + 1), len(columns)), np.float32)  # [R, C] pages committed as devices are filled
    stack[[0, -1]] = np.nan
    use = [read.columns.index(name) for name in columns]
    _fill(read, groups, table, origin, step, kept, start, stack, use, spec)
    intake.report.duplicates = int(table["duplicates"].sum())
    return _fleet(stack, start, length, kept, whole, table, origin, step, span, tz, ids, static, spec, report, columns)


def _stream_columns(read: fleet_reading.Stream) -> list[str]:
    """Targets + covariates chosen as reading.Intake.columns does; a problem it names with a line is the whole-table path's."""
    numbers = dict(zip(read.columns, read.counts.tolist()))
    counts = pd.Series([numbers.get(name, 0) for name in read.order], index=read.order, dtype="int64")  # file order, as Intake.columns
    try:
        columns = read.intake.choose(counts)
    except InputError:
        raise fleet_reading.Unsupported("a column error") from None
    bound = np.sqrt(np.finfo(np.float64).max / max(len(columns), 1)) / 4  # regular._check_magnitude's
    if any(read.largest[read.columns.index(name)] > min(bound, _FLOAT32_MAX / 16) for name in columns):
        raise fleet_reading.Unsupported("a value too large")
    return columns


def _survey(read, groups, table, spec) -> tuple[np.ndarray, np.ndarray, np.ndarray, Counter]:
    """Pass 1 over the timestamps: duplicates and readings into the table; [D] first, last timestamp, own step (0: one reading); gaps."""
    devices = read.devices
    duplicates, readings = np.zeros(devices, np.int64), np.zeros(devices, np.int64)
    first, last, own = np.zeros(devices, np.int64), np.zeros(devices, np.int64), np.zeros(devices, np.int64)
    gaps = Counter()  # gap (ns) -> how often, over the whole fleet
    for low, high in groups:
        codes, time, _ = read.gather(low, high, values=False)  # [n], [n]
        codes, time, _ = _in_order(codes - low, time, None)
        same = _same(codes, time)
        if same.any() and spec.duplicates == "error":
            raise fleet_reading.Unsupported("a repeated timestamp")  # the whole-table path names both lines
        duplicates[low:high] = np.bincount(codes[same], minlength=high - low)
        codes, time = codes[~same], time[~same]
        new = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])  # first reading of each device
        readings[low:high] = np.diff(np.r_[new, len(codes)])
        first[low:high], last[low:high] = time[new], time[np.r_[new[1:], len(codes)] - 1]
        own[low:high] = _own_steps(codes, time, high - low, gaps)
    table["duplicates"], table["readings"] = duplicates, readings
    return first, last, own, gaps


def _fill(read, groups, table, origin, step, kept, start, stack, use, spec) -> None:
    """Pass 2: each group's readings merged, put on its devices' grids and into the stack; inserted into the table; pieces freed."""
    at = np.full(read.devices, -1, np.int64)
    at[kept] = start
    rows, inserted = table["rows"].to_numpy(), np.zeros(read.devices, np.int64)
    for low, high in groups:
        codes, time, values = read.gather(low, high, values=True)  # [n], [n], [n, C']
        codes, time, values = _in_order(codes, time, values[:, use])
        same = _same(codes, time)
        codes, time, values = _merge(codes, time, values, same, spec.duplicates)
        slot, between = np.divmod(time - origin[codes], step)  # grid step of each reading, per device; readings off the grid
        repeated = _same(codes, slot)
        if between.any() or repeated.any():  # readings between grid points
            codes, slot, values = _merge(codes, slot, values, repeated, spec.aggregation)
        inserted[low:high] = rows[low:high] - np.bincount(codes - low, minlength=high - low)  # grid steps without a reading
        mine = np.flatnonzero(at[low:high] >= 0) + low  # this process's kept devices in the group: consecutive in the stack
        if len(mine):
            stack[at[mine[0]] - 1 : at[mine[-1]] + rows[mine[-1]] + 1] = np.nan
            row = at[codes]  # [n] the first row of the reading's device in the stack; -1: a device left out
            put = slice(None) if (row >= 0).all() else row >= 0  # every reading's device kept: no copy
            place = row[put] + slot[put]  # [n'] the reading's row in the stack
            columns = stack.shape[1]  # one flat assignment of every cell is faster than one of rows
            flat = (place[:, None] * columns + np.arange(columns)).ravel()  # [n' * C]
            stack.put(flat, values[put])
        read.free(high)
    table["inserted"] = inserted


def _in_order(codes: np.ndarray, time: np.ndarray, values: np.ndarray | None):
    """Rows sorted by device, then time (stably: repeats keep their order in the files)."""
    backwards = np.diff(time) < 0
    if not ((np.diff(codes) < 0).any() or (backwards & (codes[1:] == codes[:-1])).any()):
        return codes, time, values
    order = np.lexsort((time, codes))
    return codes[order], time[order], None if values is None else values[order]


def _same(codes: np.ndarray, key: np.ndarray) -> np.ndarray:
    """[n] rows (sorted by device and key) that repeat the previous row's device and key."""
    return np.r_[False, (codes[1:] == codes[:-1]) & (key[1:] == key[:-1])]


def _own_steps(codes: np.ndarray, time: np.ndarray, devices: int, gaps: Counter) -> np.ndarray:
    """[devices] each device's most common step (0 for a single reading), as _steps finds it; the gaps counted into `gaps`."""
    inside = codes[1:] == codes[:-1]
    if not inside.any():
        return np.zeros(devices, np.int64)
    between, owner = np.diff(time)[inside], codes[1:][inside]  # a gap belongs to its later reading's device
    counts = pd.Series(between).value_counts()
    gaps.update(dict(zip(counts.index.tolist(), counts.tolist())))
    common = int(counts.index[0])
    hits = np.bincount(owner, weights=between == common, minlength=devices)
    total = np.bincount(owner, minlength=devices)
    own = np.where(2 * hits > total, common, 0)  # a majority is the device's most common step, whichever step is tried
    for d in np.flatnonzero((2 * hits <= total) & (total > 0)):  # the few devices where it is not a majority
        own[d] = int(pd.Series(between[owner == d]).value_counts().index[0])
    return own


def _fleet_step(own: np.ndarray, readings: np.ndarray, gaps: Counter, offset) -> tuple[int, np.ndarray]:
    """The fleet's step (ns) and each device's own ([D]; a single reading's is the fleet's most common gap), as _steps finds them."""
    given = None if offset is None else offset.nanos
    if not gaps:
        if given is None:
            raise fleet_reading.Unsupported("every device has a single reading")  # the whole-table path's error
        return given, np.full(len(own), given)
    own[readings == 1] = given or max(gaps, key=gaps.get)
    if given is not None:
        return given, own
    steps, counts = np.unique(own, return_counts=True)  # the fleet's step: the one most devices read at
    return int(steps[np.argmax(counts)]), own


def _device_codes(intake: reading.Intake, folder: bool, id_columns: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """[N] device number of every reading (in order of first appearance) and the ids [D] (one column per id column)."""
    if folder:
        names = [os.path.splitext(os.path.basename(path))[0] for path in intake.report.files]
        return intake.file_numbers().astype(np.int64), pd.DataFrame({id_columns[0]: names})
    parts = intake.id_parts[0] if len(intake.id_parts) == 1 else pd.concat(intake.id_parts, ignore_index=True)
    codes, uniques = pd.factorize(parts[id_columns[0]])  # in order of first appearance
    names = [np.asarray(uniques, dtype=object)]  # per id column, its value for each device
    for name in id_columns[1:]:  # one number per combination of ids, again in order of first appearance
        column, uniques = pd.factorize(parts[name])
        codes, combined = pd.factorize(codes * len(uniques) + column)
        names = [*(n[combined // len(uniques)] for n in names), np.asarray(uniques, dtype=object)[combined % len(uniques)]]
    ids = pd.DataFrame({name: pd.Series(values, dtype=str).str.strip() for name, values in zip(id_columns, names)})
    return codes.astype(np.int64, copy=False), ids


def _static_values(intake: reading.Intake, codes: np.ndarray, ids: pd.DataFrame, static_columns: list[str]) -> pd.DataFrame:
    """[D] each device's value of every static column (text, stripped), or InputError naming a column and a device where it changes."""
    parts = intake.id_parts[0] if len(intake.id_parts) == 1 else pd.concat(intake.id_parts, ignore_index=True)
    static = pd.DataFrame(index=range(len(ids)))
    for name in static_columns:
        text = parts[name].astype(str).str.strip().to_numpy()  # [N] as read, in the order of `codes`
        numbers, values = pd.factorize(text)
        low = np.full(len(ids), len(values), np.int64)
        high = np.full(len(ids), -1, np.int64)
        np.minimum.at(low, codes, numbers)
        np.maximum.at(high, codes, numbers)
        changing = np.flatnonzero(low != high)
        if len(changing):
            d = int(changing[0])
            rows = np.flatnonzero(codes == d)
            other = rows[np.flatnonzero(numbers[rows] != numbers[rows[0]])[0]]
            (path, line), (path2, line2) = intake.places(np.array([rows[0], other]))
            raise InputError(
                f"data.static_columns: column '{reading.shown(name)}' is not constant for device '{'/'.join(map(str, ids.iloc[d]))}': "
                f"{values[numbers[rows[0]]]!r} ('{path}' line {line}) and {values[numbers[other]]!r} ('{path2}' line {line2}).\n"
                "A static column holds one value per device: fix those rows, or leave the column out of data.static_columns."
            )
        static[name] = np.asarray(values, dtype=object)[low]
    return static


def _sorted(codes: np.ndarray, time: np.ndarray) -> bool:
    """Whether rows are already grouped by device (each device one block, devices in order of first appearance) and in time order."""
    change = np.flatnonzero(codes[1:] != codes[:-1])  # last row of every block but the last
    if not (np.diff(codes[np.r_[change, len(codes) - 1]]) == 1).all():  # codes number devices by first appearance
        return False
    backwards = np.diff(time) < 0
    backwards[change] = False  # a new device may start earlier
    return not backwards.any()


def _merge_repeats(codes, key, values, position, intake, ids, devices, policy):
    """Rows of one device sharing `key` (a timestamp, or a grid step) merged by data.duplicates or data.aggregation."""
    spec = intake.spec
    same = _same(codes, key)  # rows sorted by device and key
    per_device = np.bincount(codes[same], minlength=devices)
    if not same.any():
        return codes, key, values, position, per_device
    how = spec.duplicates if policy == "duplicates" else spec.aggregation
    if how == "error":
        hit = int(np.argmax(same))
        places = ", ".join(f"'{path}' line {line}" for path, line in intake.places(position[[hit - 1, hit]]))
        name = "/".join(map(str, ids.iloc[codes[hit]]))
        raise InputError(
            f"device '{reading.shown(name)}': timestamp {pd.Timestamp(key[hit])} occurs more than once ({places}) and "
            "data.duplicates=error.\nRemove the repeated rows, or set data.duplicates to mean, first or last."
        )
    if policy == "duplicates":
        intake.report.duplicates = int(same.sum())
    codes, key, values = _merge(codes, key, values, same, how)
    return codes, key, values, position[~same], per_device


def _merge(codes: np.ndarray, key: np.ndarray, values: np.ndarray, same: np.ndarray, how: str):
    """Rows marked `same` (repeating the previous row's device and key) merged into it by `how` (mean, sum, first, ...)."""
    if not same.any():
        return codes, key, values
    values = values if values.flags.writeable else np.array(values)  # pandas may hand out the block read-only
    involved = same | np.r_[same[1:], False]  # every row of a group of repeats
    group = np.cumsum(~same[involved]) - 1
    merged = pd.DataFrame(values[involved]).groupby(group)
    values[np.flatnonzero(involved & ~same)] = (merged.sum(min_count=1) if how == "sum" else merged.agg(how)).to_numpy(dtype=np.float64)
    keep = ~same
    return codes[keep], key[keep], values[keep]


def _steps(codes: np.ndarray, time: np.ndarray, devices: int, given: int | None) -> tuple[int, np.ndarray]:
    """The fleet's step (ns) and each device's own most common step ([D], 0 for a single reading)."""
    inside = codes[1:] == codes[:-1]
    if not inside.any():
        if given is None:
            raise InputError("every device has a single reading: too few to infer the step.\nAdd readings, or set data.freq, e.g. '1h'.")
        return given, np.full(devices, given)
    gaps, owner = np.diff(time), codes[1:]  # [N-1]: a gap belongs to its later reading's device
    every = max(1, gaps.size // 1_000_000)
    common = int(pd.Series(gaps[::every][inside[::every]]).value_counts().index[0])
    hits = np.bincount(owner, weights=(gaps == common) & inside, minlength=devices)
    total = np.bincount(codes, minlength=devices) - 1
    own = np.where(2 * hits > total, common, 0)
    for d in np.flatnonzero((2 * hits <= total) & (total > 0)):  # the few devices where the common step is not a majority
        own[d] = int(pd.Series(gaps[(owner == d) & inside]).value_counts().index[0])
    own[total == 0] = given or common
    if given is not None:
        return given, own
    steps, counts = np.unique(own, return_counts=True)  # the fleet's step: the one most devices read at
    return int(steps[np.argmax(counts)]), own


def _check_grids(table: pd.DataFrame, intake: reading.Intake, last_rows: np.ndarray, step: int, id_columns) -> None:
    """Refuses a device whose grid has far more steps than it has readings (a typo in a year), before the stack is built."""
    spec = intake.spec
    allowed = spec.max_grid_factor * table["readings"].to_numpy() + regular._GRID_SLACK
    worst = table["rows"].to_numpy() - allowed
    if not (worst > 0).any():
        return
    d = int(np.argmax(worst))
    row = table.iloc[d]
    path, line = intake.places([last_rows[d]])[0]
    name = "/".join(reading.shown(row[c]) for c in id_columns)
    raise InputError(
        f"device '{name}': a grid every {_freq_text(step)} from {row['first']} to {row['last']} ('{path}' line {line}) would need "
        f"{row['rows']:,} steps for {row['readings']:,} readings, more than data.max_grid_factor={spec.max_grid_factor:g} per reading.\n"
        "Fix its timestamps (a typo in a year?), set data.freq to the step the devices report at, or raise data.max_grid_factor."
    )


def _clean(stack, start, length, kept, table, step, spec, report, columns, id_columns) -> None:
    """Stuck runs masked, interior gaps filled or masked, per device; counts into the table and the report."""
    devices = len(table)
    stuck = np.zeros(devices, np.int64)
    if spec.stuck_steps is not None:
        before = _nan_cells(stack, start)  # [D] NaN cells from each device's start to the next
        regular._mask_stuck(stack.T, spec, report)  # the NaN rows between devices end every run
        stuck[kept] = _nan_cells(stack, start) - before
    interpolated, masked, longest = np.zeros(devices, np.int64), np.zeros(devices, np.int64), np.zeros(devices, np.int64)
    ends = start + length  # the NaN row after each device
    for c, name in enumerate(columns):
        column = stack[:, c]  # [R] a view
        starts, lengths = regular._runs(np.isnan(column))
        device = np.searchsorted(start, starts, side="right") - 1  # -1: the leading NaN row
        home = device.clip(0)
        inside = (device >= 0) & (starts > start[home]) & (starts + lengths < ends[home])  # touching neither edge of its device's grid
        starts, lengths, device = starts[inside], lengths[inside], device[inside]
        if spec.long_gaps == "fail" and (lengths > spec.max_gap).any():
            g = int(np.argmax(lengths))
            d = kept[device[g]]
            gap_start = pd.Timestamp(table["first"].iloc[d]) + pd.Timedelta(int(starts[g] - start[device[g]]) * step)
            raise InputError(
                f"device '{'/'.join(map(str, table.iloc[d][id_columns]))}' column '{reading.shown(name)}': a gap of {lengths[g]} steps "
                f"from {gap_start} is longer than data.max_gap={spec.max_gap}.\n"
                f"Set data.max_gap={lengths[g]} to interpolate it, or data.long_gaps=mask to skip it."
            )
        short = lengths <= spec.max_gap
        regular.interpolate(column, starts[short], lengths[short])
        np.add.at(interpolated, kept[device[short]], lengths[short])
        np.add.at(masked, kept[device[~short]], lengths[~short])
        np.maximum.at(longest, kept[device], lengths)
    table["interpolated"], table["masked"], table["stuck"], table["longest_gap"] = interpolated, masked, stuck, longest
    report.values_interpolated, report.values_masked, report.stuck_values = int(interpolated.sum()), int(masked.sum()), int(stuck.sum())
    report.longest_gap = None


def _nan_cells(stack: np.ndarray, start: np.ndarray) -> np.ndarray:
    """[D] NaN cells of the stack from each device's first row to the next device's (one byte a row held, not eight)."""
    per_row = np.isnan(stack).sum(axis=1, dtype=np.uint8 if stack.shape[1] < 256 else np.int64)  # [R]
    return np.add.reduceat(per_row, start, dtype=np.int64)


def _stamps(ns: np.ndarray, tz: str | None) -> pd.DatetimeIndex:
    stamps = pd.to_datetime(ns, utc=tz is not None)
    return stamps.tz_convert(tz) if tz is not None else stamps


def _freq_text(step: int) -> str:
    text = pd.tseries.frequencies.to_offset(pd.Timedelta(int(step), unit="ns")).freqstr
    return text if text[0].isdigit() else f"1{text}"
