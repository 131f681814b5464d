"""The fast tier: every stage in-process on tiny data, the real config composed with Hydra's compose API.

One tiny training runs `forecast.training.train` itself (no subprocess) into a temporary tracking
store; the other tests take its outputs stage by stage: the logged Forecaster, the served pyfunc,
scoring, and the config helpers the commands share.
"""

from __future__ import annotations

import os

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from forecast import config, evaluate, pyfunc, scoring, training
from forecast.errors import InputError
from forecast.forecaster import Forecaster

TINY = ["data.lookback=48", "data.horizon=24", "model.hidden_size=8", "trainer.max_epochs=1", "trainer.accelerator=cpu"]


def compose_train(*overrides: str):
    """conf/train.yaml as `python -m forecast.train <overrides>` composes it."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny in-process training of the default GRU on the sample, recorded in a temp store."""
    folder = tmp_path_factory.mktemp("stages")
    cwd, uri = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(folder)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
    try:
        best = training.train(compose_train(*TINY), folder / "outputs", "python -m forecast.train (in-process)")
    finally:
        os.chdir(cwd)
        if uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = uri
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("forecast").experiment_id])
    return folder, best, run


def test_training_records_one_finished_run_with_finite_metrics(trained):
    folder, best, run = trained
    assert run.info.status == "FINISHED" and np.isfinite(best)
    metrics = run.data.metrics
    assert all(np.isfinite(v) for v in metrics.values())
    assert metrics["val/best_loss"] == pytest.approx(best)
    assert metrics["test/mse_scaled"] < metrics["baseline/mse_scaled"] * 2  # a trained model, not noise
    assert run.data.tags["architecture"] == "gru" and run.data.params["model.hidden_size"] == "8"


def test_the_logged_forecaster_reproduces_the_test_metric(trained):
    folder, _, run = trained
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    model, forecaster = pyfunc.load(f"runs:/{run.info.run_id}/model")
    config.register_resolvers()
    data = config.build(compose_train(*TINY).data)
    test = evaluate.forecast_test(forecaster, data.frame, data.datasets["test"].origins)
    assert evaluate.test_metrics(test)["test/mse_scaled"] == pytest.approx(run.data.metrics["test/mse_scaled"], rel=1e-5)

    readings = data.frame.iloc[-48:][forecaster.inputs].reset_index()
    readings["timestamp"] = readings["timestamp"].astype(str)
    served = model.predict(readings)  # the served path, one window
    direct = forecaster.forecast(data.frame[forecaster.inputs].to_numpy()[None, -48:])[0]
    assert list(served.columns) == ["timestamp", *forecaster.targets] and len(served) == 24
    assert np.allclose(served[forecaster.targets].to_numpy(), direct)
    assert served["timestamp"].iloc[0] == data.frame.index[-1] + pd.Timedelta("30min")


def test_forecaster_round_trips_through_its_bundle(tmp_path):
    from forecast.networks import build_network
    from forecast.windows import Scaler

    args = {
        "network": "recurrent",
        "n_inputs": 3,
        "target_index": [2, 0],
        "lookback": 12,
        "horizon": 6,
        "cell": "lstm",
        "hidden_size": 8,
        "segment_len": 4,
    }
    net = build_network(**args)
    scaler = Scaler(mean=np.array([1.0, 2.0, 3.0]), std=np.array([0.5, 1.0, 2.0]))
    forecaster = Forecaster(net, scaler, ["a", "b", "c"], ["c", "a"], "1h", args)
    raw = np.random.default_rng(0).normal(size=(5, 12, 3))
    loaded = Forecaster.load(forecaster.save(tmp_path / "model.pt"))
    assert loaded.target_index == [2, 0] and loaded.freq == "1h"
    assert np.allclose(loaded.forecast(raw), forecaster.forecast(raw))
    assert forecaster.forecast(raw).shape == (5, 6, 2)


def test_windows_are_views_of_the_frame_and_line_up_with_their_origins():
    frame = pd.DataFrame({"a": np.arange(20.0), "b": 100 + np.arange(20.0)})
    forecaster = Forecaster(torch.nn.Identity(), None, ["a", "b"], ["b"], "1h", {})
    forecaster.net.lookback, forecaster.net.horizon = 4, 3
    inputs, actual = forecaster.windows(frame, np.array([4, 10]))
    assert inputs.shape == (2, 4, 2) and actual.shape == (2, 3, 1)
    assert inputs[1, :, 0].tolist() == [6, 7, 8, 9] and actual[1, :, 0].tolist() == [110, 111, 112]


def test_score_is_one_definition_at_every_aggregation():
    rng = np.random.default_rng(1)
    actual, pred, std = rng.normal(size=(7, 5, 2)), rng.normal(size=(7, 5, 2)), np.array([2.0, 0.5])
    total, by_step, by_window = (scoring.score(pred, actual, std, axis) for axis in (None, (0, 2), (1, 2)))
    assert total["mse_scaled"] == pytest.approx(np.mean(((pred - actual) / std) ** 2))
    assert total["rmse"] == pytest.approx(np.sqrt(np.mean((pred - actual) ** 2)))
    assert by_step["mae"].shape == (5,) and by_window["mae_scaled"].shape == (7,)
    assert np.mean(by_step["mse_scaled"]) == pytest.approx(total["mse_scaled"])
    last = scoring.last_value(actual, [1], horizon=3)
    assert last.shape == (7, 3, 1) and (last[:, 2, 0] == actual[:, -1, 1]).all()


def test_overrides_are_read_by_hydras_parser():
    assert config.override_key("+data.sep=';'") == "data.sep" and config.override_key("model=gru") == "model"
    assert config.overrides_under(["data=csv", "data.path=x", "++data.lookback=4", "model.lr=1"], "data", exclude=("data.path",)) == [
        "data=csv",
        "++data.lookback=4",
    ]
    with pytest.raises(InputError, match="Quote values"):
        config.parse_overrides(["data.sep=;"])


@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp"])
@pytest.mark.parametrize("model", ["gru", "lstm", "linear", "last_value", "seasonal_naive"])
def test_every_config_group_composes(model, trainer):
    cfg = compose_train(f"model={model}", f"trainer={trainer}")
    assert cfg.model._target_ == "forecast.lightning_module.ForecastModule" and cfg.trainer._target_ == "lightning.Trainer"


def test_trainer_gpu_composes_mixed_precision_pinned_memory_and_workers():
    """trainer=gpu sets the trainer and the loaders together; the precision resolves on the machine that trains."""
    gpu, cpu = compose_train("trainer=gpu"), compose_train("trainer=cpu")
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert gpu.trainer.accelerator == "gpu" and gpu.trainer.precision == ("bf16-mixed" if bf16 else "16-mixed")
    assert gpu.data.pin_memory and gpu.data.num_workers > 0
    assert cpu.trainer.precision == "32-true" and not cpu.data.pin_memory and cpu.data.num_workers == 0
    assert gpu.trainer.max_epochs == cpu.trainer.max_epochs  # everything else from trainer/default


def test_zero_epochs_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(InputError, match="trainer.max_epochs=0"):
        training.train(compose_train(*TINY, "trainer.max_epochs=0"), tmp_path, "test")
