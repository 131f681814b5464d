"""What the MLflow UI shows: experiments marked as model training, the comparison's verdict as its description.

In-process and fast: a comparison is written to a temporary store by hand (a parent run, two children
with the metrics and `evaluation/` artifacts a training logs, the parent's speed.json), then reported.
"""

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from forecast import comparison_report, speed, tracking
from forecast.errors import InputError

H = 4


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    yield MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_tracking_uri(None)


def test_experiments_are_created_or_marked_as_model_training(store):
    created = tracking.connect("forecast")
    assert store.get_experiment(created).tags[tracking.KIND_TAG] == "custom_model_development"
    older = store.create_experiment("made-before")  # by an older version, without the tag
    assert tracking.connect("made-before") == older
    assert store.get_experiment(older).tags[tracking.KIND_TAG] == "custom_model_development"
    assert tracking.ui_hint(created).endswith(f"/#/experiments/{created}?workflowType=machine_learning")


def log_child(client, experiment_id, parent_id, architecture, mse, tmp_path):
    run = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent_id, "architecture": architecture, "condition": "base"})
    rid = run.info.run_id
    for key, value in {"seed": 0, "data.lookback": 8, "data.horizon": H, "model.hidden_size": 16}.items():
        client.log_param(rid, key, value)
    for key, value in {
        "test/mse_scaled": mse,
        "test/mae_scaled": mse / 2,
        "test/mae": mse,
        "test/rmse": mse,
        "time/fit_s": 1.0,
        "time/epoch_s": 0.5,
        "model/params": 100.0,
        "model/recurrent_params": 60.0,
        "train/best_epoch": 0,
    }.items():
        client.log_metric(rid, key, value)
    client.log_metric(rid, "val/loss", mse, step=0)
    rng = np.random.default_rng(len(architecture))
    folder = tmp_path / rid
    folder.mkdir()
    pd.DataFrame({"origin": np.arange(50), "mse_scaled": mse + 0.01 * rng.standard_normal(50), "mae_scaled": 0.1}).to_parquet(
        folder / "test_by_window.parquet"
    )
    pd.DataFrame({"step": np.arange(1, H + 1), "mse_scaled": mse, "mae_scaled": 0.1}).to_parquet(folder / "test_by_step.parquet")
    pd.DataFrame(
        {"timestamp": pd.date_range("2024-01-01", periods=12, freq="h"), "x": 1.0, "x:forecast": [np.nan] * 8 + [1.0] * H}
    ).to_parquet(folder / "example_window.parquet")
    client.log_artifacts(rid, str(folder), "evaluation")
    client.set_terminated(rid)


def test_the_comparison_run_carries_its_verdict_as_its_description(store, tmp_path):
    experiment_id = tracking.connect("forecast")
    parent = store.create_run(experiment_id, tags={"kind": "comparison", "dataset": "sample"})
    pid = parent.info.run_id
    store.log_param(pid, "models", "['gru', 'lstm']")
    store.log_param(pid, "conditions", "base")
    log_child(store, experiment_id, pid, "gru", 0.50, tmp_path)
    log_child(store, experiment_id, pid, "lstm", 0.40, tmp_path)
    times = {"gru": [0.010, 0.030, 0.011, 0.050], "lstm": [0.008, 0.024, 0.0088, 0.040]}  # a load that comes and goes
    store.log_dict(
        pid,
        {
            "conditions": {"base": {"step_ms": {"gru": 20.5, "lstm": 16.4}, "times": times, "untrainable": []}},
            "threads": 1,
            "protocol": "interleaved steps (test)",
        },
        "speed.json",
    )

    comparison_report.build(pid, tmp_path / "report")
    note = store.get_run(pid).data.tags[tracking.DESCRIPTION]
    verdict = (tmp_path / "report" / "verdict.txt").read_text().strip()
    assert note.startswith("**Verdict**") and verdict in note and "report/report.html" in note
    assert verdict.startswith(
        "On sample the LSTM trains 1.25x faster per step than the GRU on this machine (IQR 1.25-1.25), and the LSTM is 20.0% more accurate"
    )
    assert store.get_run(pid).data.metrics["verdict/lstm_vs_gru/step_time_ratio"] == pytest.approx(1.25)


def test_timing_a_run_that_is_not_a_comparison_is_refused(store):
    run = store.create_run(tracking.connect("forecast"))
    with pytest.raises(InputError, match="is not a comparison"):
        speed.measure_comparison(run.info.run_id)
    with pytest.raises(InputError, match="no run nosuchrun"):
        speed.measure_comparison("nosuchrun")
