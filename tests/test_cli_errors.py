"""Bad input, as a user meets it: a short message naming the problem, exit status 2, no traceback,
and no run left behind marked RUNNING.

Every data case is checked in-process (the data module the command builds, its InputError); three of
them, and the settings below, also as the command itself (e2e): the exit status and the one line.
"""

import re

import pytest
from conftest import TINY, build_data, no_running_runs, run_cli

from forecast.errors import InputError

HEADER = "timestamp,a,b\n"


def rows(n, start="2024-01-01", fmt=lambda i: f"{i % 7}.5,{i % 5}"):
    stamps = __import__("pandas").date_range(start, periods=n, freq="h").strftime("%Y-%m-%d %H:%M:%S")
    return "".join(f"{t},{fmt(i)}\n" for i, t in enumerate(stamps))


CASES = {
    "missing file": (None, ["data.path=nowhere.csv"], "nowhere.csv"),
    "header and no rows": (HEADER, [], "no rows"),
    "no timestamp column": ("when,a,b\n" + rows(300).replace("2024", "x2024"), [], "timestamp"),
    "unparseable timestamps": (HEADER + rows(300) + "yesterday,1,2\n", [], "line 302"),
    "non-numeric target value": (
        HEADER + rows(200) + "2024-02-01 00:00:00,abc,1\n" + rows(100, "2024-02-02"),
        [],
        r"in.csv' line 202, column 'a'",
    ),
    "unknown target": (HEADER + rows(300), ["data.targets=[a,zz]"], "zz"),
    "all-empty column": ("timestamp,a,b,c\n" + rows(300, fmt=lambda i: f"{i},{i},"), ["data.targets=[a,c]"], "'c'"),
    "too few rows": (HEADER + rows(50), [], "lookback"),
    "zero horizon": (HEADER + rows(300), ["data.horizon=0"], "horizon"),
}


def case_args(name: str, folder) -> list[str]:
    content, overrides, _ = CASES[name]
    if content is not None:
        (folder / "in.csv").write_text(content)
    path = ["data.path=in.csv"] if content is not None else []
    return ["data=csv", *path, "data.lookback=24", "data.horizon=12", "model.segment_len=12", *overrides]  # a segment within the lookback


@pytest.mark.parametrize("name", CASES)
def test_bad_data_gives_a_short_message(name, tmp_path, monkeypatch):
    args = case_args(name, tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as raised:
        build_data(args)
    lines = str(raised.value).splitlines()
    assert len(lines) <= 2 and len(lines[0]) < 400, str(raised.value)
    assert re.search(CASES[name][2], lines[0]), lines[0]


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["missing file", "non-numeric target value", "too few rows"])
def test_bad_data_as_the_command(name, tmp_path):
    done = run_cli("forecast.train", *case_args(name, tmp_path), cwd=tmp_path)
    assert_clean_failure(done, CASES[name][2])
    assert no_running_runs(tmp_path)


@pytest.mark.e2e
def test_unknown_model_lists_the_valid_ones(tmp_path):
    done = run_cli("forecast.train", "model=transformer", cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "gru" in done.stderr and "lstm" in done.stderr


@pytest.mark.e2e
def test_unreachable_tracking_server(tmp_path):
    done = run_cli("forecast.train", *TINY, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert_clean_failure(done, "cannot reach the MLflow tracking server at http://127.0.0.1:9")


@pytest.mark.e2e
def test_out_of_range_model_setting(tmp_path):
    done = run_cli("forecast.train", *TINY, "model.dropout=1.5", cwd=tmp_path)
    assert_clean_failure(done, r"model.dropout")
    assert no_running_runs(tmp_path)


def assert_clean_failure(done, expected):
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-2000:]
    message = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and len(message[0]) < 400, done.stderr[-2000:]
    assert re.search(expected, message[0]), message[0]
