"""End to end, as a user runs it: python -m forecast.train in a temp dir, then read MLflow back."""

import mlflow
import pandas as pd
import pytest
from conftest import TINY, run_cli, store_runs

pytestmark = pytest.mark.e2e  # runs the commands as subprocesses, as a user does

METRICS = {
    "train/loss",
    "val/loss",
    "test/mae",
    "test/rmse",
    "test/mse_scaled",
    "test/mae_scaled",
    "time/fit_s",
    "time/epoch_s",
    "throughput/train_windows_per_s",
    "model/params",
    "model/recurrent_params",
    "baseline/mae",
    "baseline/rmse",
    "baseline/mse_scaled",
    "baseline/mae_scaled",
    "time/predict_s",
    "inference/ms_per_window_b1",
    "inference/ms_per_window_b256",
    "memory/peak_rss_mb",
}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """One multirun trains both architectures, as the README's `-m model=gru,lstm` does."""
    folder = tmp_path_factory.mktemp("train")
    done = run_cli("forecast.train", "-m", "model=gru,lstm", *TINY, cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, done


def test_each_architecture_is_one_finished_run_with_every_name(both):
    folder, done = both
    client, runs = store_runs(folder)
    assert sorted(r.data.tags["architecture"] for r in runs) == ["gru", "lstm"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["dataset"] == "sample"
        assert METRICS <= set(run.data.metrics), METRICS - set(run.data.metrics)
        assert run.data.params["model.cell"] == run.data.tags["architecture"]
        assert run.data.params["data.lookback"] == "48" and "trainer.max_epochs" in run.data.params
        assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 2  # one point per epoch
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "data_report.json", "plots"} <= artifacts
        assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/forecast_test.png"]
    by_cell = {r.data.tags["architecture"]: r.data.metrics for r in runs}
    assert 3 * by_cell["lstm"]["model/recurrent_params"] == 4 * by_cell["gru"]["model/recurrent_params"]
    assert "open the UI: mlflow ui --backend-store-uri sqlite:///mlflow.db" in done.stdout
    assert (folder / "mlruns").is_dir()  # artifacts beside the store


def test_the_run_reports_what_ingestion_did(both):
    folder, done = both
    client, runs = store_runs(folder)
    report = mlflow.artifacts.load_dict(f"{runs[0].info.artifact_uri}/data_report.json")
    assert report["duplicates"] == 1 and report["values_masked"] > 0 and report["stuck_values"] >= 72
    assert report["windows"]["test"] > 0
    assert "duplicate" in done.stdout


def test_logged_model_forecasts_raw_readings_from_its_run_uri(both):
    folder, _ = both
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    _, runs = store_runs(folder)
    run = runs[0]
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    example = model.input_example
    out = model.predict(example)
    assert list(out.columns) == ["timestamp", "outdoor_temp_c", "indoor_temp_c", "humidity_pct", "co2_ppm", "power_kw"]
    assert len(out) == 24
    step = pd.Timedelta("30min")
    assert out["timestamp"].iloc[0] == pd.Timestamp(example["timestamp"].iloc[-1]) + step
    # forecasts are in the data's units: power between 0 and 200 kW, CO2 in ppm
    assert out["power_kw"].between(0, 200).all() and out["co2_ppm"].between(200, 3000).all()


def test_ddp_with_two_cpu_processes_is_one_run(tmp_path):
    done = run_cli(
        "forecast.train", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *TINY[:-1], "trainer.max_epochs=1", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _, runs = store_runs(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert "test/mse_scaled" in runs[0].data.metrics


def test_a_baseline_runs_through_the_same_pipeline(tmp_path):
    done = run_cli("forecast.train", "model=last_value", "data.lookback=48", "data.horizon=24", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "last_value on sample: 0 params (0 recurrent) | nothing to fit" in done.stdout
    _, runs = store_runs(tmp_path)
    metrics = runs[0].data.metrics
    assert runs[0].data.tags["architecture"] == "last_value"
    assert metrics["test/mse_scaled"] == pytest.approx(metrics["baseline/mse_scaled"], rel=1e-6)  # it *is* the baseline (in float32)
