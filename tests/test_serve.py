"""`mlflow models serve` on the registered champion answers POST /invocations, as the README's curl call does."""

import copy
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pytest

pytestmark = pytest.mark.e2e  # runs the commands as subprocesses, as a user does


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})  # inf: Infinity
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def wait_until_up(url: str, process: subprocess.Popen, log, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"no answer from {url} after {timeout} s:\n{log.read_text()[-3000:]}")


def start(command: list[str], cwd, env: dict, log) -> subprocess.Popen:
    """A server in its own process group, so that stopping it stops its workers too."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")} | {"MLFLOW_DISABLE_TELEMETRY": "true"} | env
    full["PATH"] = os.path.dirname(sys.executable) + os.pathsep + full.get("PATH", "")  # uvicorn, as in an activated environment
    return subprocess.Popen(command, cwd=cwd, env=full, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def server(champion, tmp_path_factory):
    """One `mlflow models serve` of the champion for every request of this file; its URL and the README's request body."""
    folder, _ = champion
    tmp = tmp_path_factory.mktemp("serve")
    store = f"sqlite:///{folder}/mlflow.db"
    port, log = free_port(), tmp / "serve.log"
    process = start(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            "models:/forecast@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        tmp,
        {"MLFLOW_TRACKING_URI": store},
        log,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", process, log)
        mlflow.set_tracking_uri(store)
        local = mlflow.artifacts.download_artifacts("models:/forecast@champion", dst_path=str(tmp / "model"))
        body = json.loads(open(os.path.join(local, "serving_input_example.json")).read())  # what the README's curl sends
        yield f"http://127.0.0.1:{port}/invocations", body, folder
    finally:
        stop(process)


def test_the_champion_answers_http_requests_in_its_input_example_format(server):
    url, body, _ = server
    status, answer = post(url, body)
    assert status == 200, answer
    model = mlflow.pyfunc.load_model("models:/forecast@champion")
    expected = model.predict(model.input_example)
    got = answer["predictions"]
    assert len(got) == 24 and got[0]["timestamp"].startswith(str(expected["timestamp"].iloc[0]).replace(" ", "T")[:16])
    np.testing.assert_allclose([row["power_kw"] for row in got], expected["power_kw"].to_numpy(), rtol=1e-5)


def changed(body: dict, change) -> dict:
    body = copy.deepcopy(body)
    change(body["dataframe_split"])
    return body


def cell(row: int, column: int, value):
    return lambda split: split["data"][row].__setitem__(column, value)


# payload change -> the start of the one-line message
# (columns: timestamp, outdoor_temp_c, indoor_temp_c, humidity_pct, co2_ppm, power_kw)
BAD = {
    "Infinity": (cell(-1, 5, math.inf), "model input column power_kw holds inf at "),
    "1e308 whose scaling overflows": (cell(-1, 4, 1e308), "model input column co2_ppm holds 1e+308 at "),
    "-1e308": (cell(0, 1, -1e308), "model input column outdoor_temp_c holds -1e+308 at "),
    "empty frame": (lambda split: split.__setitem__("data", []), "model input is empty; send the last 48 readings"),
    "too few rows": (lambda split: split.__setitem__("data", split["data"][-5:]), "model input has 5 rows; the model needs the last 48"),
    "null in the last row": (cell(-1, 2, None), "model input column indoor_temp_c is missing its most recent readings"),
    "null inside": (cell(10, 3, None), "model input column humidity_pct is missing at "),
    "wrong column": (lambda split: split["columns"].__setitem__(-1, "watts"), "model input lacks column(s) power_kw"),
    "column twice": (lambda split: split["columns"].__setitem__(-1, "co2_ppm"), "model input has column(s) co2_ppm more than once"),
    "text in a number column": (cell(11, 3, "abc"), "model input column humidity_pct in row 12 holds 'abc', not a number"),
    "bad timestamp": (cell(20, 0, "yesterday"), "model input timestamp in row 21 is 'yesterday', not a date and time"),
    "timestamps out of order": (lambda split: split["data"].reverse(), "model input timestamp in row 2 is "),
    "a repeated timestamp": (lambda split: split["data"][30].__setitem__(0, split["data"][31][0]), "model input timestamp in row 31 is "),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_payload_is_a_400_with_the_projects_one_line_message(server, case):
    url, body, folder = server
    change, expected = BAD[case]
    status, answer = post(url, changed(body, change))
    assert status == 400, answer
    assert answer["message"].startswith(expected) and "\n" not in answer["message"], answer["message"]
    text = json.dumps(answer)
    assert "stack_trace" not in answer and "Traceback" not in text and "site-packages" not in text and str(folder) not in text


def test_the_server_still_answers_good_requests_after_bad_ones_and_never_with_nan(server):
    url, body, _ = server
    status, answer = post(url, body)
    assert status == 200 and len(answer["predictions"]) == 24
    assert all(math.isfinite(v) for row in answer["predictions"] for k, v in row.items() if k != "timestamp")
