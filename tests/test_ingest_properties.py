"""Property: any CSV-ish input either loads into a finite, regular frame or fails with InputError.

Hypothesis writes arbitrary files (random headers, separators, numbers, infinities, text, dates,
blank lines, stray bytes, other encodings, one file or a folder of two) and reads them with
arbitrary settings. load_frame must return a frame whose index is strictly increasing with a
constant step and whose values are finite, NaN only in masked gaps, or raise InputError: never
any other exception.
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from forecast.errors import InputError
from forecast.frame import CsvSpec, load_frame

BASE = pd.Timestamp("2024-01-01")
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)
NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(
        [
            "inf",
            "-inf",
            "Infinity",
            "NaN",
            "1e308",
            "-1e308",
            "1e40",
            "9" * 400,
            "1,234.5",
            "1.234,5",
            "2,5",
            "",
            " ",
            "NA",
            "-200",
            "0x1F",
            "1e-320",
        ]
    ),
)
CELL = st.one_of(NUMBER, NUMBER, NUMBER, TEXT)
ODD_STAMP = st.one_of(
    st.integers(0, 10**7).map(lambda k: str(BASE + pd.Timedelta(seconds=k))),
    st.sampled_from(
        [
            "",
            "2024-13-01 00:00",
            "yesterday",
            "2225-01-01 00:00:00",
            "2999-01-01",
            "1600-01-01",
            "2024-01-01T00:00:00+05:00",
            "2024-01-01 00:00:00.5",
            "01/02/2024 10:00",
            "0",
            "2024-01-01",
        ]
    ),
    TEXT,
)


@st.composite
def inputs(draw) -> tuple[dict[str, bytes], dict]:
    """({file name: content}, settings for CsvSpec); `wild` (0-3) sets how often a part is malformed."""
    wild = draw(st.integers(0, 3))
    odd = lambda rate: wild and draw(st.integers(0, rate // wild)) == 0  # noqa: E731 - true about once in `rate` draws at wild=1
    sep = draw(st.sampled_from([",", ";", "\t", "|"]))
    names = draw(
        st.lists(
            st.one_of(st.sampled_from(["a", "b", "c", "temp \u00b0C"]), TEXT) if odd(4) else st.sampled_from(["a", "b", "c", "d"]),
            min_size=int(not odd(8)),
            max_size=4,
            unique=not odd(4),
        )
    )
    header = [draw(st.sampled_from(["timestamp", "time", "date", "ts", "Timestamp"] + ["when"] * odd(4))), *names]
    step = draw(st.sampled_from([pd.Timedelta(seconds=1), pd.Timedelta(minutes=10), pd.Timedelta(hours=1), pd.Timedelta(days=1)]))
    base = draw(st.sampled_from([BASE, pd.Timestamp("2024-03-31"), pd.Timestamp("2024-10-27")]))  # two days with a clock change
    order = draw(st.permutations(range(40))) if odd(4) else range(40)
    rows = []
    for i in list(order)[: draw(st.integers(0 if odd(4) else 2, 40))]:
        stamp = draw(ODD_STAMP) if odd(30) else str(base + i * step)
        cells = [draw(CELL) if odd(8) else f"{np.sin(i + k) * 10:.2f}" for k in range(len(names))]
        if odd(20):
            cells = cells[: draw(st.integers(0, len(cells)))] + [draw(CELL)] * draw(st.integers(0, 2))
        rows.append([stamp, *cells])
    long = draw(st.integers(0, 3)) == 0  # the same readings as (timestamp, sensor, value) rows
    if long:
        header, rows = ["timestamp", "sensor", "value"], [[row[0], name, cell] for row in rows for name, cell in zip(names, row[1:])]
    text = io.StringIO()
    writer = csv.writer(text, delimiter=sep, lineterminator="\n")
    for row in [header, *rows]:
        if odd(20):
            text.write("\n")  # a blank line
        if odd(30):
            text.write(sep.join(row) + "\n")  # unquoted, whatever it holds
        else:
            writer.writerow(row)
    encoding = draw(st.sampled_from(["utf-8", "latin-1", "utf-16"])) if odd(8) else "utf-8"
    data = text.getvalue().encode(encoding, errors="replace")
    if odd(15):
        data = data[: len(data) // 2] + draw(st.binary(max_size=40)) + data[len(data) // 2 :]
    files = {"in.csv": data}
    if draw(st.integers(0, 3)) == 0:  # a folder of two drops that may overlap
        lines = data.splitlines(keepends=True)
        cut = draw(st.integers(1, max(1, len(lines))))
        files = {"drops/1.csv": b"".join(lines[:cut]), "drops/2.csv": b"".join(lines[:1] + lines[max(1, cut - draw(st.integers(0, 3))) :])}
    options = {
        "sep": draw(st.sampled_from([",", ";", "", ";;", "\t", "|"])) if odd(10) else sep,
        "decimal": draw(st.sampled_from([".", ","])) if odd(6) else ".",
        "thousands": draw(st.sampled_from([None, ",", ".", "'"])) if odd(6) else None,
        "nonfinite": draw(st.sampled_from(["error", "missing"])),
        "duplicates": draw(st.sampled_from(["mean", "first", "last", "error"])),
        "overlap": draw(st.sampled_from(["error", "first", "last", "mean"])),
        "freq": draw(st.sampled_from([None, "10min", "1h", "1s", "1D"])) if odd(4) else None,
        "max_gap": draw(st.integers(0, 3)),
        "stuck_steps": draw(st.sampled_from([None, 2])),
        "na_values": draw(st.sampled_from([[], [-200], ["NA", -200]])),
        "layout": "long" if long else "wide",
        "timezone": draw(st.sampled_from([None, None, "Europe/Berlin", "UTC"])),
    }
    return files, options


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(inputs())
def test_any_input_loads_into_a_finite_regular_frame_or_is_an_input_error(case):
    files, options = case
    with tempfile.TemporaryDirectory() as folder:
        for name, content in files.items():
            (Path(folder) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(folder) / name).write_bytes(content)
        path = str(Path(folder) / ("drops" if len(files) > 1 else "in.csv"))
        try:
            frame, report = load_frame(CsvSpec(path=path, **options))
        except InputError as error:
            event(" ".join(str(error).split("\n")[0].split("'")[2].split()[:4]) if "'" in str(error) else str(error)[:30])
            assert str(error).strip() and len(str(error).splitlines()) <= 2, str(error)
            return
    event("loaded")
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index.freq is not None and len(frame) >= 1
    fixed = isinstance(frame.index.freq, pd.offsets.Tick)  # else calendar steps: constant on the wall clock
    steps = np.diff((frame.index if fixed or frame.index.tz is None else frame.index.tz_localize(None)).asi8)
    assert (steps > 0).all() and (steps == steps[0]).all() if len(steps) else True
    values = frame.to_numpy()
    assert values.dtype == np.float64 and not np.isinf(values).any()
    assert np.isnan(values).sum() == report.values_masked
    assert list(frame.columns) == report.targets + report.covariates
