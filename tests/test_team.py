"""Team mode: train (and register) and predict against a real `mlflow server` on 127.0.0.1."""

import sys

import pandas as pd
import pytest
from conftest import TINY, run_cli
from test_serve import free_port, start, stop, wait_until_up

pytestmark = pytest.mark.e2e  # runs the commands as subprocesses, as a user does


@pytest.mark.slow  # three processes start (the server, a training, a forecast): about a minute on two idle cores
def test_train_register_and_predict_against_a_tracking_server(tmp_path):
    (tmp_path / "server").mkdir()
    (tmp_path / "laptop").mkdir()
    port, log = free_port(), tmp_path / "server.log"
    server = start(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server/mlflow.db",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        tmp_path / "server",
        {},
        log,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", server, log)
        team = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
        trained = run_cli(
            "forecast.train", *TINY[:-1], "trainer.max_epochs=1", "tracking.register=forecast", cwd=tmp_path / "laptop", env=team
        )
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert "registered forecast version 1" in trained.stdout
        done = run_cli("forecast.predict", "model_uri=models:/forecast/1", "output=next.csv", cwd=tmp_path / "laptop", env=team)
        assert done.returncode == 0, done.stderr[-3000:]
        assert len(pd.read_csv(tmp_path / "laptop" / "next.csv")) == 24
        assert not (tmp_path / "laptop" / "mlflow.db").exists()  # everything went to the server
        assert (tmp_path / "server" / "mlartifacts").is_dir()  # the model's files too
    finally:
        stop(server)
