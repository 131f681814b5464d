"""Malformed inputs and settings, as an unattended run meets them (issue 11, ingestion side).

Every case runs in-process (the real config composed with Hydra, the data module built from it;
fast) and must raise InputError with a message naming the file, line, column or setting. One case
of each family (values, files, timestamps, encodings, binary files, settings, windows) also runs as
the real command (`python -m forecast.train`, marked e2e): exit status 2, one `error:` line, no
traceback, and no run left RUNNING or FINISHED in the tracking store. The command turns any
InputError into that exit the same way, so running all cases through it would only repeat the
~8 s start of a Python process per case.
"""

from __future__ import annotations

import gzip
import io
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import build_data, run_cli
from mlflow import MlflowClient

from forecast.errors import InputError

TINY = ["data.lookback=24", "data.horizon=12", "model.hidden_size=8", "model.segment_len=12", "trainer.max_epochs=1"]


def series(
    n: int = 300,
    start: str = "2024-01-01",
    freq: str = "h",
    columns: tuple = ("a", "b"),
    sep: str = ",",
    cell=None,
    stamps: list | None = None,
) -> str:
    """A wide CSV: a timestamp and `columns`; cell(i, name) gives a cell's text (default: a smooth reading)."""
    stamps = stamps or list(pd.date_range(start, periods=n, freq=freq).strftime("%Y-%m-%d %H:%M:%S"))
    cell = cell or (lambda i, name: None)
    lines = [sep.join(["timestamp", *columns])]
    for i, stamp in enumerate(stamps):
        values = [cell(i, name) for name in columns]
        values = [v if v is not None else f"{np.sin(i / 7 + k) * 10 + 20:.2f}" for k, v in enumerate(values)]
        lines.append(sep.join([stamp, *values]))
    return "\n".join(lines) + "\n"


def at(row: int, column: str, text: str):
    return lambda i, name: text if (i, name) == (row, column) else None


def parquet() -> bytes:
    buffer = io.BytesIO()
    pd.read_csv(io.StringIO(series(20))).to_parquet(buffer)
    return buffer.getvalue()


def zipped(names: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in names.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def typo_in_year(i: int) -> str:
    stamp = pd.Timestamp("2025-03-01") + pd.Timedelta(seconds=i)
    return str(stamp.replace(year=2225) if i == 150 else stamp)


def sensor_that_stopped(i: int, name: str) -> str | None:
    return "" if name == "c" and i >= 100 else None


def drop(start: int, stop: int, shift: float = 0.0) -> str:
    text = series(300, cell=lambda i, name: f"{i + shift:.1f}" if name == "a" else None)
    lines = text.splitlines(keepends=True)
    return lines[0] + "".join(lines[1:][start:stop])


MULTIBYTE_THEN_BROKEN = (
    series(300).replace("timestamp,a,b", "timestamp,a,b \u00b0C").encode().replace(b"\n2024-01-03 00:00:00,", b"\n2024-01-03 00:00:00\xff,")
)
# case -> (files: {name: text or bytes}, overrides, what the message must name)
CASES = {
    # numbers finite or refused
    "inf cell": (
        {"in.csv": series(cell=at(40, "a", "inf"))},
        [],
        r"in.csv' line 42, column 'a': inf is not a finite number.*data\.nonfinite",
    ),
    "-inf cell": ({"in.csv": series(cell=at(41, "b", "-inf"))}, [], r"in.csv' line 43, column 'b': -inf is not a finite"),
    "Infinity cell": ({"in.csv": series(cell=at(9, "a", "Infinity"))}, [], r"in.csv' line 11, column 'a'.*not a finite"),
    "500,000-digit number": ({"in.csv": series(cell=at(5, "a", "9" * 500_000))}, [], r"in.csv' line 7, column 'a'.*not a finite"),
    "1e308 whose spread overflows": (
        {"in.csv": series(cell=at(20, "b", "1e308"))},
        [],
        r"in.csv' line 22, column 'b': 1e\+308 is too large",
    ),
    "1e40 beyond float32 when scaled": (
        {"in.csv": series(cell=at(290, "a", "1e40"))},
        [],
        r"column 'a' at 2024-01-13 02:00:00.*overflows float32",
    ),
    # no silent drops
    "thousands separators": (
        {"in.csv": series(cell=lambda i, name: f'"1{i % 10},037.7"' if name == "a" else None)},
        [],
        r"in.csv' line 2, column 'a': '10,037.7' is not a number.*data\.thousands=','",
    ),
    "text among numbers": (
        {"in.csv": series(cell=at(100, "b", "oops"))},
        [],
        r"in.csv' line 102, column 'b': 'oops' is not a number.*data\.na_values.*data\.targets=\[a\]",
    ),
    "decimal commas unread": (
        {"in.csv": series(sep=";", cell=lambda i, name: f"{i % 9},5")},
        ["data.sep=';'"],
        r"in.csv' line 2, column 'a': '0,5'.*data\.decimal=','",
    ),
    "duplicate column names": ({"in.csv": series(columns=("a", "a"))}, [], r"in.csv': the header names column 'a' twice"),
    "drops that disagree": (
        {"drops/1.csv": drop(0, 200), "drops/2.csv": drop(150, 300, shift=0.5)},
        ["data.path=drops"],
        r"1.csv' line 152 and '.*2.csv' line 2 disagree at 2024-01-07 06:00:00.*data\.overlap",
    ),
    "rows wider than the header": (
        {"in.csv": series().replace("\n", ",1\n").replace(",b,1\n", ",b\n", 1)},
        [],
        r"in.csv': its rows have more fields than",
    ),
    # timestamps cannot blow up memory
    "year typo in a 1-second series": (
        {"in.csv": series(stamps=[typo_in_year(i) for i in range(300)])},
        [],
        r"in.csv' line 152: timestamp 2225-03-01 00:02:30 lies 200 years after the rest",
    ),
    "year beyond 2262": (
        {
            "in.csv": series(
                stamps=[str(pd.Timestamp("2024-01-01") + pd.Timedelta(hours=i)) if i != 7 else "2999-01-01 00:00:00" for i in range(300)]
            )
        },
        [],
        r"in.csv' line 9: timestamp 2999-01-01 00:00:00 is outside",
    ),
    "freq far finer than the readings": ({"in.csv": series()}, ["data.freq=1s"], r"would need 1,076,401 steps.*data\.max_grid_factor"),
    # files recognised for what they are
    "UTF-16": ({"in.csv": series().encode("utf-16")}, [], r"in.csv' is UTF-16 text.*data\.encoding=utf-16"),
    "UTF-32": ({"in.csv": series().encode("utf-32")}, [], r"in.csv' is UTF-32 text"),
    "gzip": ({"in.csv": gzip.compress(series().encode())}, [], r"in.csv' is a gzip-compressed file.*gunzip"),
    "xlsx": (
        {"in.csv": zipped({"[Content_Types].xml": "<Types/>", "xl/workbook.xml": "<workbook/>"})},
        [],
        r"in.csv' is an Excel workbook \(.xlsx\).*export the sheet as CSV",
    ),
    "xls": ({"in.csv": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(2000)}, [], r"in.csv' is an Excel 97-2003 workbook"),
    "zip archive": ({"in.csv": zipped({"readings.csv": series()})}, [], r"in.csv' is a zip archive.*extract the CSV"),
    "parquet": ({"in.csv": parquet()}, [], r"in.csv' is a Parquet file.*convert it to a UTF-8 CSV"),
    "pdf": ({"in.csv": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"}, [], r"in.csv' is a PDF document"),
    "random bytes": ({"in.csv": random.Random(0).randbytes(5000)}, [], r"in.csv' holds binary data \(byte 0x.. on line \d+\)"),
    "broken UTF-8 byte": ({"in.csv": MULTIBYTE_THEN_BROKEN}, [], r"in.csv' line 50: byte 0xff is not valid UTF-8.*data\.encoding"),
    "byte invalid in the encoding": (
        {"in.csv": series().replace("a,b", "a,b\u00e9").encode("latin-1")},
        ["data.encoding=ascii"],
        r"in.csv' line 1: byte 0xe9 is not valid ascii",
    ),
    # settings refused up front
    "empty separator": ({"in.csv": series()}, ["data.sep=''"], r"data\.sep='' is not valid.*one character"),
    "multi-character separator": ({"in.csv": series()}, ["data.sep=';;'"], r"data\.sep=';;' is not valid"),
    "decimal equal to separator": ({"in.csv": series()}, ["data.decimal=','"], r"data\.decimal and data\.sep are both ','"),
    "thousands equal to decimal": ({"in.csv": series()}, ["data.thousands=.", "data.decimal=."], r"data\.thousands and data\.decimal"),
    "unknown encoding": ({"in.csv": series()}, ["data.encoding=klingon"], r"data\.encoding='klingon' is not a known"),
    "bad nonfinite policy": ({"in.csv": series()}, ["data.nonfinite=zero"], r"data\.nonfinite='zero' is not valid.*error, missing"),
    "bad overlap policy": ({"in.csv": series()}, ["data.overlap=median"], r"data\.overlap='median' is not valid"),
    "zero freq": ({"in.csv": series()}, ["data.freq=0h"], r"data\.freq='0h' is not a positive step"),
    "lookback that is not a number": ({"in.csv": series()}, ["data.lookback=week"], r"data\.lookback='week' is not a whole number"),
    # too little data: say why
    "a sensor that stopped reporting": (
        {"in.csv": series(600, columns=("a", "b", "c"), cell=sensor_that_stopped)},
        [],
        r"the val span .* holds no complete window.*column 'c' is missing in 500 of 600 rows"
        r".*data\.targets=\[a,b\]",
    ),
    "stride leaves one training window": (
        {"in.csv": series()},
        ["data.train_stride=1000"],
        r"data\.train_stride=1000 leaves 1 of the 175 training windows",
    ),
    "fraction leaves one training window": (
        {"in.csv": series()},
        ["data.train_fraction=0.001"],
        r"data\.train_fraction=0\.001 leaves 1 of the 175 training windows",
    ),
}


def write_case(folder: Path, files: dict) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def overrides_of(name: str) -> list[str]:
    files, overrides, _ = CASES[name]
    path = [] if any(o.startswith("data.path=") for o in overrides) else ["data.path=in.csv"]
    return ["data=csv", *path, *TINY[:2], *overrides]


@pytest.mark.parametrize("name", CASES)
def test_in_process(name, tmp_path, monkeypatch):
    files, _, expected = CASES[name]
    write_case(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as raised:
        build_data(overrides_of(name))
    assert re.search(expected, str(raised.value), re.S), str(raised.value)
    first = str(raised.value).splitlines()[0]
    assert len(str(raised.value).splitlines()) <= 2 and len(first) < 400, str(raised.value)


# one case per family of the CASES, as the real command
COMMAND_CASES = [
    "inf cell",
    "drops that disagree",
    "year beyond 2262",
    "UTF-16",
    "zip archive",
    "empty separator",
    "stride leaves one training window",
]


@pytest.mark.e2e
@pytest.mark.parametrize("name", COMMAND_CASES)
def test_command(name, tmp_path):
    files, _, expected = CASES[name]
    write_case(tmp_path, files)
    done = run_cli("forecast.train", *overrides_of(name), *TINY[2:], cwd=tmp_path)
    assert done.returncode == 2, (done.returncode, done.stdout[-1000:], done.stderr[-3000:])
    assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    errors = [k for k, line in enumerate(lines) if line.startswith("error:")]
    assert len(errors) == 1 and len(lines[errors[0]]) < 400, done.stderr[-3000:]
    message = "\n".join(lines[errors[0] : errors[0] + 2])
    assert re.search(expected, message, re.S), message
    assert no_run_left(tmp_path)


@pytest.mark.e2e
def test_report_comes_before_the_error_when_too_little_data_is_left(tmp_path):
    write_case(tmp_path, CASES["a sensor that stopped reporting"][0])
    done = run_cli("forecast.train", *overrides_of("a sensor that stopped reporting"), *TINY[2:], cwd=tmp_path)
    assert done.returncode == 2
    assert (
        re.search(r"read 600 rows from in.csv; .*\n.*incomplete rows at the edges dropped", done.stdout)
        or "500 incomplete rows at the edges dropped" in done.stdout
    ), done.stdout


def test_report_travels_with_the_error_when_too_little_data_is_left(tmp_path, monkeypatch):
    write_case(tmp_path, CASES["a sensor that stopped reporting"][0])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as raised:
        build_data(overrides_of("a sensor that stopped reporting"))
    assert raised.value.context[0].startswith("read 600 rows from in.csv; 500 incomplete rows at the edges dropped")


def test_reported_prints_the_context_to_stdout_before_the_error(capsys):
    from forecast.errors import reported

    with pytest.raises(SystemExit) as stopped, reported():
        raise InputError("bad thing\nfix it", context=["read 3 rows", "targets: a"])
    out, err = capsys.readouterr()
    assert stopped.value.code == 2 and out == "read 3 rows\ntargets: a\n" and err == "error: bad thing\nfix it\n"


def no_run_left(folder: Path) -> bool:
    """No run in the folder's tracking store is RUNNING or FINISHED (none at all is best: the store was never created)."""
    if not (folder / "mlflow.db").exists():
        return True
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    return all(r.info.status not in ("RUNNING", "FINISHED") for r in runs)


# --- what worked before keeps working: the README's "Train on your own CSV" commands, on small files ---


def air_quality(rows: int = 700) -> str:
    """Shaped like the UCI air-quality export: ';', decimal commas, -200 for missing, Date and Time, an empty trailer."""
    lines = ["Date;Time;CO(GT);NOx(GT);T;;"]
    for i, stamp in enumerate(pd.date_range("2004-03-10 18:00", periods=rows, freq="h")):
        nox = "-200" if i % 50 == 7 else f"{100 + i % 30}"
        co, t = (f"{v:.1f}".replace(".", ",") for v in (2 + np.sin(i / 5), 12 + np.cos(i / 9)))
        lines.append(f"{stamp:%d/%m/%Y};{stamp:%H.%M.%S};{co};{nox};{t};;")
    return "\n".join(lines) + "\n"


def iot(hours: int = 200) -> str:
    """A long layout: two devices reporting every 20 seconds."""
    stamps = pd.date_range("2024-01-01", periods=hours * 180, freq="20s")
    rows = (f"{stamp},{device},{np.sin(i / 300) + k:.3f}\n" for i, stamp in enumerate(stamps) for k, device in enumerate(("d1", "d2")))
    return "timestamp,device,reading\n" + "".join(rows)


README_EXAMPLES = {
    "wide": ({"readings.csv": series(400, columns=("power_kw", "outdoor_temp_c"))}, ["data.path=readings.csv"]),
    "targets and covariates": (
        {"readings.csv": series(400, columns=("power_kw", "outdoor_temp_c"))},
        ["data.path=readings.csv", "data.targets=[power_kw]", "data.covariates=[outdoor_temp_c]"],
    ),
    # as Hydra must receive it: the README's shell line passes data.sep=; unquoted, a Hydra grammar error (issue 12)
    "European export": (
        {"AirQuality.csv": air_quality()},
        [
            "data.path=AirQuality.csv",
            "data.sep=';'",
            "data.decimal=','",
            "data.na_values=[-200]",
            "data.date_column=Date",
            "data.time_column=Time",
            "data.time_format=%d/%m/%Y %H.%M.%S",
        ],
    ),
    "long layout": (
        {"iot.csv": iot()},
        [
            "data.path=iot.csv",
            "data.layout=long",
            "data.sensor_column=device",
            "data.value_column=reading",
            "data.freq=15min",
            "data.aggregation=mean",
        ],
    ),
    "folder of drops": (
        {f"drops/day{d}.csv": series(240, start=str(pd.Timestamp("2024-01-01") + pd.Timedelta(days=10 * d))) for d in range(3)},
        ["data.path=drops/", "data.freq=1h", "data.lookback=168", "data.horizon=24"],
    ),
}


@pytest.mark.parametrize("name", README_EXAMPLES)
def test_readme_examples_still_build(name, tmp_path, monkeypatch):
    files, overrides = README_EXAMPLES[name]
    write_case(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    data = build_data(["data=csv", *overrides])
    assert min(data.windows.values()) >= 1 and np.isfinite(data.frame.to_numpy()[~np.isnan(data.frame.to_numpy())]).all()
