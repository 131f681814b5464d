"""python -m forecast.schedule fires the retrain from APScheduler and keeps its job in a SQLite job store."""

import sqlite3

import pytest
from conftest import run_cli
from mlflow import MlflowClient

pytestmark = pytest.mark.e2e  # runs the commands as subprocesses, as a user does

RETRAIN_ONLY_SCORES = (
    'retrain_args=["data=csv","data.path=drops","data.na_values=[-9999]","data.lookback=48","data.horizon=24","challengers=[]"]'
)


def test_the_scheduler_fires_the_retrain_on_its_interval(champion, tmp_path):
    folder, _ = champion
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name("forecast").experiment_id
    before = len(client.search_runs([experiment], "tags.kind = 'retrain'"))
    done = run_cli(
        "forecast.schedule",
        RETRAIN_ONLY_SCORES,
        "interval_s=1",
        "max_runs=1",
        f"jobstore=sqlite:///{tmp_path}/schedule.db",
        cwd=folder,
        env={"PYTHONUNBUFFERED": "1"},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "on interval[0:00:01]" in out and "firing: python -m forecast.retrain data=csv data.path=drops" in out
    assert "decision: keep" in out and "retrain exited with status 0" in out and "scheduler stopped after 1 firing(s)" in out
    assert len(client.search_runs([experiment], "tags.kind = 'retrain'")) == before + 1  # the firing's retrain run
    with sqlite3.connect(tmp_path / "schedule.db") as db:  # the job outlives the process
        assert [row[0] for row in db.execute("select id from apscheduler_jobs")] == ["retrain"]


def test_a_bad_cron_expression_is_a_short_error(tmp_path):
    done = run_cli("forecast.schedule", "cron='61 2 * * *'", f"jobstore=sqlite:///{tmp_path}/schedule.db", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: cron='61 2 * * *'") and "Traceback" not in done.stderr
