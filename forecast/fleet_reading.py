"""Fleet reading in pieces: a fleet export -> compact pieces of rows sorted by device, never the whole file as one table.

`stream(spec, report, id_columns, static_columns, folder, share)` reads every file in pieces of 1/64
of it (1 MB to `block_bytes`, cut at line ends: `_chunks`), each parsed by pyarrow
(`pyarrow.csv.read_csv`, the next piece in a second thread while this one is compacted), with what
forecast/reading.py decides for the whole-table path: the encoding (forecast/sniff.py), the header
and its timestamp column, the separator and decimal mark, the column types (inferred on the file's
first MB), the missing-value codes (text codes and pandas' defaults as null values; numeric codes
replaced after parsing), infinite values (data.nonfinite). Each piece, as it arrives, becomes a
`Piece`:

    devices [k] int64   the device numbers in the piece (numbered in order of first appearance), ascending
    ends    [k] int64   the row after each device's last row (rows sorted by device, stably: each
                        device's rows keep their order in the file)
    time    [n] int32   seconds from `Stream.base` (int64 nanoseconds where they do not fit)
    values  [m, C] float32  the candidate reading columns, for the rows of devices this process owns

so a row costs 12 bytes (4 + 2 x 4 for two readings) instead of the table's 30 or more, and the
parsed piece is freed (and handed back to the system) before the next one is compacted. With
share=(rank, world) a process owns the devices whose number is rank modulo world (numbers are given
in order of first appearance, which every process computes identically from the same files): it
drops the readings of other devices block by block and keeps only their timestamps (4 bytes a row),
which the fleet-wide facts need (each device's step, span and status: forecast/fleet.py).

The streaming path reads exactly what the whole-table path reads. Where it cannot, it raises
`Unsupported` and load_fleet falls back to the whole-table path (forecast/reading.py), which
reads the file whole and names the file and line of any problem:

- timestamps pyarrow does not parse by itself (not ISO 8601, two date/time columns, data.time_format),
  naive timestamps with data.timezone (localising needs the whole file's order), files mixing naive
  timestamps and UTC offsets; data.thousands; UTF-16 and UTF-32 files; a blank line before the header;
  files of one fleet with different columns; a column of another type than numbers or text;
- rows without a timestamp, id or static value, a header without rows, a column pandas and pyarrow
  name differently, a cell that is not a number in a reading column, a text column holding numbers;
- every error that names a line or a cell (a repeated timestamp with data.duplicates=error, a grid
  too long, a static column that changes within a device, a value too large): the whole-table path
  re-reads the files on that error path only and raises the error with its line.
"""

from __future__ import annotations

import codecs
import ctypes
import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as csv
from pandas._libs.parsers import STR_NA_VALUES

from forecast import reading, sniff
from forecast.frame import CsvSpec, DataReport

BLOCK_BYTES = 16 << 20  # the largest piece of a file parsed at once
SAMPLE_BYTES = 1 << 20  # the start of a file read to infer its columns' types
_TEXT = pa.dictionary(pa.int32(), pa.string())  # ids, static and text columns
_NS = 1_000_000_000


try:
    _LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None
    _LIBC.malloc_trim  # noqa: B018 (glibc only)
except (OSError, AttributeError):
    _LIBC = None


class Unsupported(Exception):
    """The streaming reader cannot read this input as the whole-table path does (see the module docstring)."""


@dataclass
class Piece:
    """One block of rows, sorted by device (shapes in the module docstring)."""

    devices: np.ndarray  # [k] int64 ascending
    ends: np.ndarray  # [k] int64
    time: np.ndarray  # [n] int32 seconds from the stream's base, or int64 ns
    values: np.ndarray  # [m, C] float32: rows of owned devices only
    owned: np.ndarray | None  # [k] bool: devices whose readings are kept; None: every device

    def without(self, high: int) -> Piece:
        """A copy of this piece without the devices below `high`."""
        _, a, _, r0 = self.rows(0, high)  # devices and rows below `high`
        v0 = r0 if self.owned is None else int(np.sum(np.diff(np.r_[0, self.ends[:a]]) * self.owned[:a]))  # values of devices < high
        owned = None if self.owned is None else self.owned[a:].copy()
        return Piece(self.devices[a:].copy(), self.ends[a:] - r0, self.time[r0:].copy(), self.values[v0:].copy(), owned)

    def rows(self, low: int, high: int) -> tuple[int, int, int, int]:
        """(first device, end device, first row, end row) of devices low..high-1 in this piece."""
        a, b = np.searchsorted(self.devices, [low, high])
        return int(a), int(b), int(self.ends[a - 1]) if a else 0, int(self.ends[b - 1]) if b else 0


@dataclass
class Stream:
    """What streaming the files gathered: the pieces, the devices, the column counts the report needs."""

    intake: reading.Intake
    folder: bool
    id_columns: list[str]
    static_columns: list[str]
    share: tuple[int, int] | None
    block_bytes: int = BLOCK_BYTES
    columns: list[str] = field(default_factory=list)  # candidate reading columns [C]
    text: list[str] = field(default_factory=list)  # columns of text (no number): not readings, but named in the report
    order: list[str] = field(default_factory=list)  # the columns and the text columns in file order
    pieces: list[Piece | None] = field(default_factory=list)
    keys: dict = field(default_factory=dict)  # raw id tuple -> device number
    names: list[tuple] = field(default_factory=list)  # [D] raw id values per device
    static: list[list[str]] = field(default_factory=list)  # [D] stripped static values per device
    rows: list[int] = field(default_factory=list)  # [D] rows read per device
    counts: np.ndarray | None = None  # [C] numbers per column
    largest: np.ndarray | None = None  # [C] largest magnitude per column
    aware: bool | None = None  # timestamps with UTC offsets (every file alike)
    base: int | None = None  # seconds: time offsets count from it

    @property
    def devices(self) -> int:
        return len(self.names)

    def device(self, key: tuple) -> int:
        """The number of the device with these raw ids, a new one for ids not seen before."""
        code = self.keys.get(key)
        if code is None:
            code = self.keys[key] = len(self.names)
            self.names.append(key)
            self.static.append([])
            self.rows.append(0)
        return code

    def ids(self) -> pd.DataFrame:
        """[D] one column per id column, the values as the whole-table path strips them."""
        if self.folder:
            return pd.DataFrame({self.id_columns[0]: [key[0] for key in self.names]})
        values = np.array(self.names, dtype=object).reshape(len(self.names), len(self.id_columns))
        return pd.DataFrame({name: pd.Series(values[:, i], dtype=str).str.strip() for i, name in enumerate(self.id_columns)})

    def groups(self, budget: int) -> list[tuple[int, int]]:
        """Consecutive device ranges [low, high) of about `budget` rows each (a larger device alone)."""
        ends = np.cumsum(self.rows)
        bounds, low = [], 0
        while low < self.devices:
            high = max(low + 1, int(np.searchsorted(ends, (ends[low - 1] if low else 0) + budget, side="right")))
            bounds.append((low, min(high, self.devices)))
            low = high
        return bounds

    def gather(self, low: int, high: int, values: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Rows of devices low..high-1 in file order: codes [n] int64, time [n] int64 ns, values [n, C] float32 (NaN: not owned)."""
        codes, times, readings = [], [], []
        for piece in self.pieces:
            if piece is None or piece.devices[-1] < low or piece.devices[0] >= high:
                continue
            a, b, r0, r1 = piece.rows(low, high)
            if a == b:
                continue
            counts = np.diff(np.r_[r0, piece.ends[a:b]])  # [b - a] rows per device
            codes.append(np.repeat(piece.devices[a:b], counts))
            time = piece.time[r0:r1]
            times.append(time if time.dtype == np.int64 else (time.astype(np.int64) + self.base) * _NS)
            if values:
                readings.append(_owned_values(piece, a, b, r0, r1, counts))
        if not codes:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, len(self.columns)), np.float32) if values else None
        return np.concatenate(codes), np.concatenate(times), np.concatenate(readings) if values else None

    def free(self, high: int) -> None:
        """Drops the rows of devices below `high` (already in the stack) and hands their memory back.

        A piece goes when all its devices are done; a piece at least half done is copied without
        them (each row is copied at most about once in all), so that a file sorted by time, whose
        every piece holds every device, frees its pieces as the stack fills too.
        """
        changed = False
        for i, piece in enumerate(self.pieces):
            if piece is None or piece.devices[0] >= high:
                continue
            if piece.devices[-1] < high:
                self.pieces[i], changed = None, True
            elif 2 * piece.rows(0, high)[3] >= len(piece.time):
                self.pieces[i], changed = piece.without(high), True
        if changed:
            _trim()


def _trim() -> None:
    """Returns the C heap's free pages to the system (glibc's malloc_trim), so that freed pieces make room for the stack.

    A piece is a few hundred kB: glibc's heap keeps such blocks, and without this the process's
    memory would hold the pieces and the stack together whichever order the devices come in.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _owned_values(piece: Piece, a: int, b: int, r0: int, r1: int, counts: np.ndarray) -> np.ndarray:
    """[r1 - r0, C] the readings of rows r0..r1-1 of a piece, NaN for devices not owned."""
    if piece.owned is None:
        return piece.values[r0:r1]
    before = int(np.sum(np.diff(np.r_[0, piece.ends[:a]]) * piece.owned[:a]))  # owned rows before device a
    mine = np.repeat(piece.owned[a:b], counts)  # [r1 - r0]
    out = np.full((r1 - r0, piece.values.shape[1]), np.nan, np.float32)
    out[mine] = piece.values[before : before + int(mine.sum())]
    return out


def stream(
    spec: CsvSpec, report: DataReport, id_columns: list[str], static_columns: list[str], folder: bool, share, block_bytes: int = BLOCK_BYTES
) -> Stream:
    """Every file of report.files read block by block into a Stream (raises Unsupported where the whole-table path is needed)."""
    intake = reading.Intake(spec, report, ids=([] if folder else id_columns) + static_columns)
    result = Stream(intake, folder, id_columns, static_columns, share, block_bytes)
    for number, path in enumerate(report.files):
        if folder:
            result.device((os.path.splitext(os.path.basename(path))[0],))
        _read_file(path, result, number)
    if not result.devices:
        raise Unsupported("no rows")
    return result


def _read_file(path: str, result: Stream, number: int) -> None:
    """One file, block by block, into result.pieces."""
    spec, intake = result.intake.spec, result.intake
    encoding = sniff.encoding(path, spec)
    header = reading._header(path, spec, encoding)  # a name written twice is the same error as on the whole-table path
    stamps = reading._timestamp_columns(header, path, spec)
    keys = intake.ids
    if len(stamps) != 1 or spec.time_format or spec.thousands is not None or any(name not in header for name in keys):
        raise Unsupported("timestamps, thousands separators or id columns")
    types = _column_types(path, header, stamps[0], keys, encoding, result)
    convert = csv.ConvertOptions(
        column_types=types,
        null_values=sorted(STR_NA_VALUES | set(intake.text_codes)),
        strings_can_be_null=True,
        decimal_point=spec.decimal,
    )
    row = 0
    try:
        for table in _parsed(path, _block_size(path, result.block_bytes), encoding, header, csv.ParseOptions(delimiter=spec.sep), convert):
            for part in table.to_batches():
                _block(part, path, row, number, stamps[0], result)
                row += part.num_rows
            del table, part
            pa.default_memory_pool().release_unused()  # the parsed block's memory, back to the system before the next one
            _trim()
    except (pa.ArrowException, UnicodeError, ValueError) as error:
        raise Unsupported(str(error)) from None
    if row == 0:
        raise Unsupported("a header without rows")
    intake.report.rows_read += row


THREADS = max(1, min(os.cpu_count() or 1, 8))  # a piece is cut into this many blocks, which pyarrow parses at once


def _parsed(path: str, size: int, encoding: str, header: list[str], parse: csv.ParseOptions, convert: csv.ConvertOptions):
    """Each piece of the file (`_chunks`) parsed, the next one read and parsed in a second thread while the caller compacts this one."""

    def next_table(chunks):
        chunk = next(chunks, None)
        if chunk is None:
            return None
        options = csv.ReadOptions(column_names=header, block_size=len(chunk) // THREADS + 1)  # a block per core, parsed in parallel
        return csv.read_csv(pa.py_buffer(chunk), read_options=options, parse_options=parse, convert_options=convert)

    chunks = _chunks(path, size, encoding)  # advanced by one job at a time
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(next_table, chunks)
        while (table := job.result()) is not None:
            job = pool.submit(next_table, chunks)
            yield table
            del table


def _chunks(path: str, size: int, encoding: str):
    """The file's lines after its header, as UTF-8 pieces of about `size` bytes that end at a line end.

    pyarrow's own streaming reader (pyarrow.csv.open_csv) reads dozens of blocks ahead, which held
    more memory than the readings; these pieces are read one at a time. A value holding a line break
    (which pyarrow does not read by default either) fails to parse here and falls back.
    """
    wide = codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    if wide:
        raise Unsupported("a wide encoding")
    utf8 = codecs.lookup(encoding).name == "utf-8"
    with open(path, "rb") as file:
        if not file.readline().strip():
            raise Unsupported("a blank line before the header")
        rest = b""
        while data := file.read(size):
            data = rest + data
            cut = data.rfind(b"\n") + 1
            rest, data = data[cut:], data[:cut]
            if data:
                yield data if utf8 else data.decode(encoding).encode()
        if rest.strip():
            yield rest if utf8 else rest.decode(encoding).encode()


def _block_size(path: str, largest: int) -> int:
    """Pieces of 1/64 of the file, between 1 MB and `largest`."""
    return int(min(largest, max(1 << 20, os.path.getsize(path) // 64)))


def _arrow_encoding(encoding: str) -> str:
    return "utf8" if encoding.replace("-", "").replace("_", "").lower() in ("utf8", "utf8sig") else encoding


def _column_types(path: str, header: list[str], stamp: str, keys: list[str], encoding: str, result: Stream) -> dict:
    """pyarrow type of every column, from the types inferred on the file's first SAMPLE_BYTES; sets result.columns."""
    spec = result.intake.spec
    with open(path, "rb") as file:
        sample = file.read(SAMPLE_BYTES)
    if len(sample) == SAMPLE_BYTES:
        sample = sample[: sample.rfind(b"\n") + 1]
    options = csv.ConvertOptions(
        column_types=dict.fromkeys(keys, _TEXT),
        null_values=sorted(STR_NA_VALUES | set(result.intake.text_codes)),
        strings_can_be_null=True,
        decimal_point=spec.decimal,
    )
    try:
        encoding = csv.ReadOptions(encoding=_arrow_encoding(encoding))
        schema = csv.read_csv(
            io.BytesIO(sample), read_options=encoding, parse_options=csv.ParseOptions(delimiter=spec.sep), convert_options=options
        ).schema
    except (pa.ArrowException, UnicodeError, ValueError) as error:
        raise Unsupported(str(error)) from None
    if schema.names != header:
        raise Unsupported("column names")
    kind = schema.field(stamp).type
    aware = pa.types.is_timestamp(kind) and kind.tz is not None
    if not (pa.types.is_timestamp(kind) or pa.types.is_date32(kind)) or (spec.timezone and not aware):
        raise Unsupported("timestamps pyarrow does not parse, or naive ones with data.timezone")
    if result.aware is not None and result.aware != aware:
        raise Unsupported("files with and without UTC offsets")
    result.aware = aware
    types = {stamp: pa.timestamp("ns", tz="UTC" if aware else None), **dict.fromkeys(keys, _TEXT)}
    columns, text = [], []
    for name in header:
        if name in types:
            continue
        kind = schema.field(name).type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind):
            types[name] = pa.float64()
            columns.append(name)
        elif pa.types.is_string(kind):
            types[name] = _TEXT
            text.append(name)
        else:
            raise Unsupported(f"column {name!r} of type {kind}")
    if result.pieces and (result.columns, result.text) != (columns, text):
        raise Unsupported("files with different columns")
    result.columns, result.text = columns, text
    result.order = [name for name in header if name in columns or name in text]
    if result.counts is None:
        result.counts, result.largest = np.zeros(len(columns), np.int64), np.zeros(len(columns))
    return types


def _block(batch: pa.RecordBatch, path: str, row: int, number: int, stamp: str, result: Stream) -> None:
    """One parsed block -> one Piece (rows sorted by device), appended to result.pieces."""
    n = batch.num_rows
    if n == 0:
        return
    time = _compact(batch.column(stamp), result)  # [n] int32 s from result.base, or int64 ns
    codes = np.full(n, number, np.int64) if result.folder else _codes(batch, result)  # [n] device numbers
    statics = [_static_codes(batch.column(name)) for name in result.static_columns]  # per column: ([n] int, texts)
    values = _readings(batch, result)  # [n, C] float32
    _check_text(batch, path, row, result)
    if (np.diff(codes) < 0).any():
        order = np.argsort(codes, kind="stable")  # [n] a block's own permutation, freed at once
        codes, time, values = codes[order], time[order], values[order]
        statics = [(numbers[order], texts) for numbers, texts in statics]
    cut = np.flatnonzero(np.diff(codes)) + 1
    firsts = np.r_[0, cut]
    devices, ends = codes[firsts], np.r_[cut, n]
    counts = np.diff(np.r_[0, ends])
    _note_static(statics, devices, firsts, result)
    for d, count in zip(devices.tolist(), counts.tolist()):
        result.rows[d] += count
    owned = None
    if result.share is not None:
        owned = devices % result.share[1] == result.share[0]
        values = values[np.repeat(owned, counts)]
    result.pieces.append(Piece(devices, ends, time, values, owned))


def _codes(batch: pa.RecordBatch, result: Stream) -> np.ndarray:
    """[n] device number of every row; new devices numbered in order of first appearance."""
    columns = [batch.column(name) for name in result.id_columns]
    if any(column.null_count for column in columns):
        raise Unsupported("a row without a device id")
    indices = [column.indices.to_numpy().astype(np.int64) for column in columns]
    texts = [column.dictionary.to_pylist() for column in columns]
    if len(columns) == 1:  # a block's dictionary lists its values in order of first appearance
        lookup = np.array([result.device((text,)) for text in texts[0]], np.int64)
        return lookup[indices[0]]
    combined = indices[0]
    for index, text in zip(indices[1:], texts[1:]):
        combined = combined * len(text) + index
    unique, first = np.unique(combined, return_index=True)
    lookup = np.empty(len(unique), np.int64)
    for u in np.argsort(first, kind="stable"):  # in order of first appearance
        parts, value = [], int(unique[u])
        for text in reversed(texts[1:]):
            value, index = divmod(value, len(text))
            parts.append(text[index])
        lookup[u] = result.device((texts[0][value], *reversed(parts)))
    return lookup[np.searchsorted(unique, combined)]


def _static_codes(column: pa.Array) -> tuple[np.ndarray, list[str]]:
    if column.null_count:
        raise Unsupported("a row without a static value")
    return column.indices.to_numpy(), [str(text).strip() for text in column.dictionary.to_pylist()]


def _note_static(statics, devices: np.ndarray, firsts: np.ndarray, result: Stream) -> None:
    """Each device's static values, once; a value that changes within a device is the whole-table path's error (it names both lines)."""
    for c, (numbers, texts) in enumerate(statics):
        unique = sorted(set(texts))  # stripped values: two spellings of one value are one value
        number = np.array([unique.index(text) for text in texts], np.int64)[numbers]  # [n] per row
        low, high = np.minimum.reduceat(number, firsts), np.maximum.reduceat(number, firsts)  # [k] per device
        if (low != high).any():
            raise Unsupported("a static value changes")
        for d, value in zip(devices.tolist(), low.tolist()):
            seen = result.static[d]
            if len(seen) <= c:
                seen.append(unique[value])
            elif seen[c] != unique[value]:
                raise Unsupported("a static value changes")


def _readings(batch: pa.RecordBatch, result: Stream) -> np.ndarray:
    """[n, C] float32 readings; numeric missing codes and (data.nonfinite=missing) infinite values made NaN and counted."""
    intake = result.intake
    values = np.empty((batch.num_rows, len(result.columns)), np.float32)
    for c, name in enumerate(result.columns):
        arrow = batch.column(name)
        ends = pc.min_max(arrow)  # one pass in pyarrow; nulls (empty cells, text missing codes) left out
        low, high = ends["min"].as_py(), ends["max"].as_py()
        column = arrow.to_numpy(zero_copy_only=False)  # [n] float64, NaN where empty
        if intake.number_codes and pc.any(pc.is_in(arrow, value_set=pa.array(intake.number_codes, pa.float64()))).as_py():
            hits = np.isin(column, intake.number_codes)
            column = np.where(hits, np.nan, column)
            intake.coded[name] += int(hits.sum())
            low, high = _ends(column)
        if low is not None and (np.isinf(low) or np.isinf(high)):
            if intake.spec.nonfinite != "missing":
                raise Unsupported("an infinite value")
            infinite = np.isinf(column)
            column = np.where(infinite, np.nan, column)
            intake.nonfinite[name] += int(infinite.sum())
            low, high = _ends(column)
        result.counts[c] += len(column) - int(np.count_nonzero(np.isnan(column)))
        if low is not None and np.isfinite(low):
            result.largest[c] = max(result.largest[c], abs(float(low)), abs(float(high)))
        with np.errstate(over="ignore"):  # too large for float32: refused on the whole-table path (largest)
            values[:, c] = column
    return values


def _ends(column: np.ndarray) -> tuple[float | None, float | None]:
    """(smallest, largest) value of a column, (None, None) where it holds none."""
    present = column[~np.isnan(column)]
    return (float(present.min()), float(present.max())) if len(present) else (None, None)


def _check_text(batch: pa.RecordBatch, path: str, row: int, result: Stream) -> None:
    """Text columns hold no number (else the whole-table path decides); the first cell of each is noted as not a number."""
    intake, spec = result.intake, result.intake.spec
    for name in batch.schema.names:
        column = batch.column(name)
        if name in intake.ids or not pa.types.is_dictionary(column.type):
            continue
        texts = pd.Series(column.dictionary.to_pylist(), dtype=object).astype(str).str.strip()
        if spec.decimal != ".":
            texts = texts.str.replace(spec.decimal, ".", regex=False)
        if pd.to_numeric(texts, errors="coerce").notna().any():
            raise Unsupported(f"text column {name!r} holds numbers")
        present = column.is_valid().to_numpy(zero_copy_only=False)
        if not present.any():
            continue
        cell = intake.not_numbers.get(name)
        if cell is None:
            first = int(np.argmax(present))
            value = column[first].as_py()
            if reading._hint(str(value), spec) is not None:
                raise Unsupported(f"text column {name!r} looks numeric")
            intake.not_numbers[name] = reading.Cell(path, row + first, value, int(present.sum()))
        else:
            cell.count += int(present.sum())


def _compact(column: pa.Array, result: Stream) -> np.ndarray:
    """[n] int32 seconds from result.base where every timestamp is a whole second within 68 years of it, else int64 ns."""
    if column.null_count:
        raise Unsupported("a row without a timestamp")
    try:
        seconds = column.cast(pa.timestamp("s", tz=column.type.tz)).cast(pa.int64())  # refuses to drop a fraction of a second
    except pa.ArrowInvalid:
        return column.cast(pa.int64()).to_numpy()
    if result.base is None:
        result.base = seconds[0].as_py()
    ends = pc.min_max(seconds)
    if ends["min"].as_py() - result.base < np.iinfo(np.int32).min or ends["max"].as_py() - result.base > np.iinfo(np.int32).max:
        return column.cast(pa.int64()).to_numpy()
    return np.subtract(seconds.to_numpy(), result.base, out=np.empty(len(seconds), np.int32), casting="unsafe")
