"""`mlflow models serve` on the registered champion answers POST /invocations, as the README's curl call does."""

import json
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

pytestmark = pytest.mark.e2e     # runs the commands as subprocesses, as a user does


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
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
    full["PATH"] = os.path.dirname(sys.executable) + os.pathsep + full.get("PATH", "")   # uvicorn, as in an activated environment
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


def test_the_champion_answers_http_requests_in_its_input_example_format(champion, tmp_path):
    folder, _ = champion
    store = f"sqlite:///{folder}/mlflow.db"
    port, log = free_port(), tmp_path / "serve.log"
    server = start([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/forecast@champion", "--env-manager", "local",
                    "-h", "127.0.0.1", "-p", str(port)], tmp_path, {"MLFLOW_TRACKING_URI": store}, log)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", server, log)
        mlflow.set_tracking_uri(store)
        local = mlflow.artifacts.download_artifacts("models:/forecast@champion", dst_path=str(tmp_path / "model"))
        body = json.loads(open(os.path.join(local, "serving_input_example.json")).read())   # what the README's curl sends
        status, answer = post(f"http://127.0.0.1:{port}/invocations", body)
        assert status == 200, answer
        model = mlflow.pyfunc.load_model("models:/forecast@champion")
        expected = model.predict(model.input_example)
        got = answer["predictions"]
        assert len(got) == 24 and got[0]["timestamp"].startswith(str(expected["timestamp"].iloc[0]).replace(" ", "T")[:16])
        np.testing.assert_allclose([row["power_kw"] for row in got], expected["power_kw"].to_numpy(), rtol=1e-5)
        body["dataframe_split"]["columns"][-1] = "watts"                            # a column the model does not know
        status, answer = post(f"http://127.0.0.1:{port}/invocations", body)
        assert status == 400 and "power_kw" in json.dumps(answer)
    finally:
        stop(server)
