"""Quantile forecasts: the pinball loss, non-crossing, calibration, the metrics' names, predict and serve columns."""

from __future__ import annotations

import os
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, run_cli
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from forecast import comparison_report, config, evaluate, promotion, pyfunc, quantiles, scoring, training
from forecast.baselines import LinearNet
from forecast.errors import InputError
from forecast.forecaster import Forecaster
from forecast.recurrent import RecurrentNet
from forecast.windows import Scaler

LEVELS = [0.05, 0.1, 0.5, 0.9, 0.95]
TINY = ["data.lookback=48", "data.horizon=24", "model.hidden_size=8", "trainer.max_epochs=1", "trainer.accelerator=cpu"]
QUANTILES = "model.quantiles=[0.05,0.1,0.9,0.95]"  # 0.5 is added


# ---- the loss and the shapes ---------------------------------------------------------------------------


def test_pinball_loss_values():
    loss = quantiles.PinballLoss([0.1, 0.5, 0.9])
    pred = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 1, 3)  # [B, H, T, Q]
    # y = 2.5: below the 0.9 level by 0.5 (0.1 * 0.5), above 0.5 by 0.5 (0.5 * 0.5), above 0.1 by 1.5 (0.1 * 1.5)
    expected = (0.1 * 1.5 + 0.5 * 0.5 + (1 - 0.9) * 0.5) / 3
    assert loss(pred, torch.tensor([[[2.5]]])).item() == pytest.approx(expected)
    assert quantiles.pinball(np.array([1.0, 2.0, 3.0]), [0.1, 0.5, 0.9], np.array(2.5)).tolist() == pytest.approx([0.15, 0.25, 0.05])
    assert quantiles.PinballLoss([0.5])(pred[..., 1:2], torch.tensor([[[0.0]]])).item() == pytest.approx(1.0)  # half the MAE


def test_calibration_window_takes_the_most_recent_share_and_refuses_others():
    assert training.recent(np.arange(100), 0.25).tolist() == list(range(75, 100)) and len(training.recent(np.arange(3), 0.01)) == 1
    assert training.recent(np.arange(100), 0.25, at_least=39).tolist() == list(range(61, 100))  # what 0.025 and 0.975 need
    assert len(training.recent(np.arange(20), 0.25, at_least=39)) == 20  # all there are
    assert quantiles.windows_needed([0.025, 0.5, 0.975]) == 39 and quantiles.windows_needed([0.1, 0.5, 0.9]) == 9
    assert quantiles.windows_needed([0.5]) == 1
    assert compose_train().model.calibration_window == 1  # the default: every validation window
    with pytest.raises(InputError, match="model.calibration_window=0"):
        config.build(compose_train("model.calibration_window=0").model, lookback=48, horizon=24, n_inputs=1, target_index=[0])


def test_levels_are_sorted_with_the_median_and_bad_levels_are_input_errors():
    assert quantiles.levels([0.9, 0.1]) == [0.1, 0.5, 0.9] and quantiles.levels(None) == [] and quantiles.levels([]) == []
    assert quantiles.intervals(quantiles.levels([0.025, 0.1, 0.9, 0.975])) == [(0, 4, "95"), (1, 3, "80")]
    for bad in ([0.0, 0.5], [1.2], ["x"]):
        with pytest.raises(InputError, match="model.quantiles"):
            quantiles.levels(bad)


@pytest.mark.parametrize("network", ["gru-parallel", "lstm-direct", "gru-mixed", "linear"])
def test_networks_emit_non_crossing_quantiles(network):
    torch.manual_seed(0)
    args = dict(n_inputs=3, target_index=[0, 2], lookback=24, horizon=12, quantiles=LEVELS)
    if network == "linear":
        net = LinearNet(**args, norm="revin")
    else:
        cell, decoder = network.split("-") if "mixed" not in network else ("gru", "parallel")
        net = RecurrentNet(**args, cell=cell, decoder=decoder, hidden_size=8, segment_len=6, channel_independent="mixed" not in network)
    y = net(torch.randn(5, 24, 3) * 3)
    assert y.shape == (5, 12, 2, 5)
    assert (y.diff(dim=-1) >= 0).all()


def test_the_point_networks_are_unchanged_by_the_quantile_option():
    """quantiles=None builds the same parameters (and so the same seeded initialisation) as before."""
    args = dict(n_inputs=3, target_index=[0], lookback=24, horizon=12)
    torch.manual_seed(0)
    plain = RecurrentNet(**args, hidden_size=8, segment_len=6)
    torch.manual_seed(0)
    none = RecurrentNet(**args, hidden_size=8, segment_len=6, quantiles=None)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), none.state_dict().values()))
    assert none(torch.randn(2, 24, 3)).shape == (2, 12, 1)


# ---- calibration and scoring -------------------------------------------------------------------------------


def test_calibration_on_a_synthetic_series_with_known_quantiles_reaches_nominal_coverage():
    """A forecaster that is 30% too narrow and biased; after split-conformal calibration on one sample
    the coverage on a fresh sample of the same law is within 2 points of nominal at every step."""
    rng = np.random.default_rng(0)
    n, h = 4000, 6
    scale = np.linspace(0.5, 2.0, h)[None, :, None]  # [1, H, 1] noise growing with the step, as forecasts do
    z = np.array([-1.6449, -1.2816, 0.0, 1.2816, 1.6449])  # standard normal quantiles of LEVELS
    wrong = 0.2 + 0.7 * scale[..., None] * z  # [1, H, 1, Q]: biased, 30% too narrow

    def sample():
        return rng.normal(size=(n, h, 1)) * scale

    val, test = sample(), sample()
    raw = np.broadcast_to(wrong, (n, h, 1, 5))
    before = scoring.score_quantiles(raw, LEVELS, test, np.ones(1), axis=(0, 2))
    assert (before["coverage_80"] < 0.7).all()
    offsets = quantiles.calibrate(raw, LEVELS, val)
    assert offsets.shape == (h, 1, 5) and (offsets[..., 2] == 0).all()  # the median is not moved
    after = scoring.score_quantiles(quantiles.apply(raw, offsets, LEVELS), LEVELS, test, np.ones(1), axis=(0, 2))
    assert np.abs(after["coverage_80"] - 0.8).max() < 0.02 and np.abs(after["coverage_90"] - 0.9).max() < 0.02
    known = np.broadcast_to(scale[..., None] * z, (n, h, 1, 5))  # the true quantiles: the best possible CRPS
    best = scoring.score_quantiles(known, LEVELS, test, np.ones(1))["crps"]
    calibrated = scoring.score_quantiles(quantiles.apply(raw, offsets, LEVELS), LEVELS, test, np.ones(1))["crps"]
    assert best <= calibrated < before["crps"].mean()
    recent = training.recent(np.arange(n), 0.25, quantiles.windows_needed(LEVELS))  # the default: the most recent quarter
    default = quantiles.apply(raw, quantiles.calibrate(raw[recent], LEVELS, val[recent]), LEVELS)
    scores = scoring.score_quantiles(default, LEVELS, test, np.ones(1), axis=(0, 2))
    assert np.abs(scores["coverage_80"] - 0.8).max() < 0.03 and np.abs(scores["coverage_90"] - 0.9).max() < 0.03


def test_on_a_calming_series_the_most_recent_windows_calibrate_closer_to_nominal():
    """The noise halves over the first 70% of the validation span and stays there: offsets from every validation
    window over-cover what follows; the most recent quarter (the default) comes within 3 points."""
    rng = np.random.default_rng(1)
    n = 4000
    calming = np.interp(np.arange(n), [0, 0.7 * n], [2.0, 1.0])[:, None, None]  # [N, 1, 1] the noise scale, falling
    val, test = rng.normal(size=(n, 1, 1)) * calming, rng.normal(size=(n, 1, 1))
    raw = np.zeros((n, 1, 1, 5))  # a forecaster with no spread: every level at 0, calibration alone makes the bands
    every = scoring.score_quantiles(quantiles.apply(raw, quantiles.calibrate(raw, LEVELS, val), LEVELS), LEVELS, test, np.ones(1))
    recent = training.recent(np.arange(n), 0.25, quantiles.windows_needed(LEVELS))
    default = quantiles.apply(raw, quantiles.calibrate(raw[recent], LEVELS, val[recent]), LEVELS)
    scores = scoring.score_quantiles(default, LEVELS, test, np.ones(1))
    assert every["coverage_80"] > 0.88 and abs(scores["coverage_80"] - 0.8) < 0.03 and abs(scores["coverage_90"] - 0.9) < 0.03
    assert scores["crps"] < every["crps"]


def test_conformal_rank_is_the_finite_sample_quantile():
    assert quantiles.conformal_rank(9, 0.9) == 9 and quantiles.conformal_rank(8, 0.9) == 8  # capped at n
    assert quantiles.conformal_rank(99, 0.95) == 95 and quantiles.conformal_rank(99, 0.05) == 5


def test_crps_is_the_midpoint_rule_of_the_pinball_integral():
    assert quantiles.weights([0.1, 0.5, 0.9]).tolist() == pytest.approx([0.3, 0.4, 0.3])
    assert quantiles.weights(LEVELS).sum() == pytest.approx(1.0)
    # N(0, 1) forecasting draws of N(0, 1): the expected CRPS is 1 / sqrt(pi)
    many = [k / 100 for k in range(1, 100)]
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(many, dtype=torch.float64)).numpy()
    y = np.random.default_rng(2).normal(size=(20000, 1, 1))
    crps = scoring.score_quantiles(np.broadcast_to(z, (20000, 1, 1, 99)), many, y, np.ones(1))["crps"]
    assert crps == pytest.approx(1 / np.sqrt(np.pi), rel=0.02)


def test_crps_of_a_point_forecast_is_its_mae_and_coverage_is_a_share():
    rng = np.random.default_rng(1)
    actual, pred, std = rng.normal(size=(50, 4, 2)), rng.normal(size=(50, 4, 2)), np.array([2.0, 0.5])
    point = np.repeat(pred[..., None], 5, axis=-1)
    scores = scoring.score_quantiles(point, LEVELS, actual, std)
    assert scores["crps"] == pytest.approx(scoring.score(pred, actual, std)["mae_scaled"])
    assert set(scores) == {"crps", "pinball", "coverage_80", "interval_width_80", "coverage_90", "interval_width_90"}
    assert scores["interval_width_80"] == 0 and 0 <= scores["coverage_90"] <= 1
    per_window = scoring.score_quantiles(point, LEVELS, actual, std[None, None], axis=(1, 2))  # std per window broadcasts
    assert per_window["crps"].shape == (50,)


# ---- a tiny in-process training with quantiles ---------------------------------------------------------------------


def compose_train(*overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantiles")
    cwd, uri = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(folder)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
    try:
        training.train(compose_train(*TINY, QUANTILES), folder / "outputs", "python -m forecast.train (in-process)")
    finally:
        os.chdir(cwd)
        if uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = uri
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("forecast").experiment_id])
    return folder, client, run


def test_quantile_metrics_are_logged_under_their_names(trained):
    folder, client, run = trained
    m = run.data.metrics
    names = {"test/crps", "test/pinball", "test/coverage_80", "test/coverage_90", "test/interval_width_80", "test/interval_width_90"}
    assert names <= set(m) and all(np.isfinite(m[k]) for k in names)
    assert m["test/crps"] > 0 and m["test/pinball"] > 0 and 0 <= m["test/coverage_80"] <= m["test/coverage_90"] <= 1
    local = client.download_artifacts(run.info.run_id, "evaluation", str(folder / "evaluation"))
    steps = pd.read_parquet(f"{local}/test_by_step.parquet")
    windows = pd.read_parquet(f"{local}/test_by_window.parquet")
    assert {"crps", "coverage_80", "interval_width_90"} <= set(steps.columns) and len(steps) == 24
    assert {"origin", "crps", "mse_scaled"} <= set(windows.columns)
    assert windows["crps"].mean() == pytest.approx(m["test/crps"], rel=1e-9)


def test_the_served_model_returns_the_quantile_columns_and_its_signature_says_so(trained):
    folder, _, run = trained
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    model, forecaster = pyfunc.load(f"runs:/{run.info.run_id}/model")
    targets = forecaster.targets
    assert forecaster.levels == LEVELS and forecaster.offsets.shape == (24, len(targets), 5)
    columns = [c for t in targets for c in [t, *(f"{t}:q{q:g}" for q in LEVELS)]]  # power_kw, power_kw:q0.05, ...
    assert [c.name for c in model.metadata.get_output_schema().inputs] == ["timestamp", *columns]
    data = config.build(compose_train(*TINY, QUANTILES).data)
    readings = data.frame.iloc[-48:][forecaster.inputs].reset_index()
    readings["timestamp"] = readings["timestamp"].astype(str)
    served = model.predict(readings)
    assert list(served.columns) == ["timestamp", *columns] and len(served) == 24
    raw = data.frame[forecaster.inputs].to_numpy()[None, -48:]
    for k, t in enumerate(targets):
        values = served[[f"{t}:q{q:g}" for q in LEVELS]].to_numpy()
        assert (np.diff(values, axis=1) >= 0).all()
        np.testing.assert_allclose(served[t], forecaster.forecast(raw)[0, :, k])
        np.testing.assert_allclose(values, forecaster.forecast_quantiles(raw)[0, :, k])
    test = evaluate.forecast_test(forecaster, data.frame, data.datasets["test"].origins)  # the logged bundle scores as the run did
    assert evaluate.test_metrics(test)["test/crps"] == pytest.approx(run.data.metrics["test/crps"], rel=1e-6)


def test_a_bundle_from_before_quantiles_still_loads_as_a_point_model(tmp_path):
    shapes = {"lookback": 48, "horizon": 24, "n_inputs": 2, "target_index": [0]}
    module = config.build(compose_train(*TINY).model, **shapes)
    scaler = Scaler(mean=np.zeros(2), std=np.ones(2))
    path = Forecaster(module.net, scaler, ["a", "b"], ["a"], "30min", module.net_kwargs | shapes).save(tmp_path / "model.pt")
    bundle = torch.load(path, weights_only=True)
    torch.save({k: v for k, v in bundle.items() if k not in ("levels", "offsets")}, path)  # as saved before quantiles
    loaded = Forecaster.load(path)
    assert loaded.levels == [] and loaded.offsets is None
    assert loaded.forecast(np.zeros((2, 48, 2))).shape == (2, 24, 1)
    with pytest.raises(InputError, match="points only"):
        loaded.forecast_quantiles(np.zeros((1, 48, 2)))


def test_the_last_value_baseline_gets_empirical_intervals(tmp_path):
    cwd, uri = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(tmp_path)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/mlflow.db"
    try:
        overrides = [o for o in TINY if "hidden_size" not in o]
        training.train(compose_train(*overrides, "model=last_value", QUANTILES), tmp_path / "outputs", "in-process")
    finally:
        os.chdir(cwd)
        if uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = uri
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("forecast").experiment_id])
    m = run.data.metrics
    assert m["test/crps"] < m["test/mae_scaled"] and m["test/interval_width_90"] > m["test/interval_width_80"] > 0
    assert m["test/mse_scaled"] == pytest.approx(m["baseline/mse_scaled"])  # the median is the last value itself


@pytest.mark.e2e
def test_predict_writes_the_quantile_columns(tmp_path):
    """python -m forecast.train with quantiles, then python -m forecast.predict, as a user runs them."""
    done = run_cli("forecast.train", *TINY, QUANTILES, "tracking.register=forecast", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "crps " in done.stdout and "coverage_80 " in done.stdout
    done = run_cli("forecast.predict", "model_uri=models:/forecast/1", "output=next.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = pd.read_csv(tmp_path / "next.csv")
    targets = ["outdoor_temp_c", "indoor_temp_c", "humidity_pct", "co2_ppm", "power_kw"]
    assert list(out.columns) == ["last_reading", "timestamp", *(c for t in targets for c in [t, *(f"{t}:q{q:g}" for q in LEVELS)])]
    done = run_cli("forecast.predict", "model_uri=models:/forecast/1", "output=back.csv", "span=test", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "crps " in done.stdout and "power_kw:q0.05" in pd.read_csv(tmp_path / "back.csv").columns


def test_retrain_scores_crps_for_quantile_and_point_contenders(trained):
    """`retrain metric=crps`: a quantile model's from its quantiles, a point forecast's (the baseline's) is its MAE."""
    folder, _, run = trained
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    _, forecaster = pyfunc.load(f"runs:/{run.info.run_id}/model")
    holdout = promotion.Holdout(config.build(compose_train(*TINY, QUANTILES).data), None)
    baseline = holdout.baseline()
    scores = holdout.score("gru", SimpleNamespace(model=forecaster, label="forecast/1", architecture="gru", unloadable=None))
    assert baseline["crps"] == baseline["mae_scaled"] and {"crps", "coverage_80", "mse_scaled"} <= set(scores)
    assert scores["crps"] < scores["mae_scaled"]  # a spread beats the point at its own median
    decision = promotion.decide({"gru": scores["crps"]}, baseline["crps"], 0.02, metric="crps", champion=baseline["crps"] * 2)
    assert decision.winner == "gru" and "crps" in decision.reason


def test_the_comparison_report_adds_crps_a_paired_test_and_a_reliability_plot():
    rng = np.random.default_rng(0)
    origins = np.arange(200)
    windows = {m: pd.DataFrame({"origin": origins, "crps": rng.gamma(2.0, 0.1 * (1 + (m == "lstm")), 200)}) for m in ("gru", "lstm")}
    runs = pd.DataFrame(
        [
            {"run_id": m, "condition": "base", "architecture": m, "seed": 0, "test/crps": w["crps"].mean(), "test/coverage_80": cov80,
             "test/coverage_95": cov95}
            for (m, w), cov80, cov95 in zip(windows.items(), (0.79, 0.84), (0.94, 0.97))
        ]
    )  # fmt: skip
    c = comparison_report.Comparison(None, runs, ["gru", "lstm"], ["base"], 24, windows, {}, {}, {}, None)
    text = comparison_report.crps_sentence(c, "gru", "lstm")
    assert text.startswith("On distributions the GRU is better: CRPS GRU ") and "Diebold-Mariano on the per-window CRPS p < 0.001" in text
    assert "95% interval covers GRU 94.0%, LSTM 97.0%; 80% interval covers GRU 79.0%, LSTM 84.0%" in text
    fig = comparison_report.plot_reliability(c)
    assert [len(line.get_xdata()) for line in fig.axes[0].lines] == [2, 2, 2]


def test_warm_start_takes_a_quantile_models_weights(trained, capsys):
    """retrain warm_start=true: a quantile challenger starts from a quantile champion of the same levels."""
    folder, _, run = trained
    os.environ["MLFLOW_TRACKING_URI"], before = f"sqlite:///{folder}/mlflow.db", os.environ.get("MLFLOW_TRACKING_URI")
    try:
        data = config.build(compose_train(*TINY, QUANTILES).data)
        module = config.build(compose_train(*TINY, QUANTILES).model, **data.model_args())
        training.warm_start(module.net, f"runs:/{run.info.run_id}/model")
        point = config.build(compose_train(*TINY).model, **data.model_args())
        training.warm_start(point.net, f"runs:/{run.info.run_id}/model")
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
    said = capsys.readouterr().out
    assert "starting from its weights" in said and "its network differs from this one; training from scratch" in said
    _, forecaster = pyfunc.load(f"runs:/{run.info.run_id}/model")
    assert all(torch.equal(a, b) for a, b in zip(module.net.state_dict().values(), forecaster.net.state_dict().values()))


def test_calibration_never_moves_the_median_and_keeps_the_levels_ordered():
    raw = np.array([0.0, 0.5, 1.0, 1.5, 2.0]).reshape(1, 1, 1, 5)  # [N, H, T, Q] at LEVELS
    offsets = np.array([0.0, 2.0, 0.0, -3.0, 0.0]).reshape(1, 1, 5)  # the 0.1 and 0.9 levels shifted across the median
    out = quantiles.apply(raw, offsets, LEVELS)[0, 0, 0]
    assert out[2] == 1.0  # the median, the point forecast
    assert list(out) == [0.0, 1.0, 1.0, 1.0, 2.0]
    assert (np.diff(quantiles.apply(raw, -offsets, LEVELS), axis=-1) >= 0).all()
