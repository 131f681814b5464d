"""The standard ETT protocol, pinned by the last-value forecast, and the baselines as models.

Composes the real Hydra config (data=etth1/ettm1, model=last_value) as the command line does.
"""

import numpy as np
import pytest
import torch
from conftest import REPO, ett_file
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from forecast import config, evaluate
from forecast.baselines import LastValue, LinearNet, SeasonalNaive
from forecast.forecaster import Forecaster


def compose_run(*overrides: str):
    config.register_resolvers()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    data = instantiate(cfg.data)
    module = instantiate(cfg.model, **data.model_args())
    return data, module


@pytest.mark.parametrize("name,windows,mse,mae", [("ETTh1", 2785, 1.2944, 0.7132), ("ETTm1", 11425, 1.2139, 0.6648)])
def test_last_value_reproduces_the_published_protocol(name, windows, mse, mae):
    path = ett_file(f"{name}.csv")
    data, module = compose_run(f"data={name.lower()}", f"data.path={path}", "model=last_value")
    assert data.windows["test"] == windows  # every test window, stride 1
    assert data.report.rows == (17420 if name == "ETTh1" else 69680)
    forecaster = Forecaster(module.net, data.scaler, data.inputs, data.targets, data.report.freq, {})
    metrics = evaluate.test_metrics(evaluate.forecast_test(forecaster, data.frame, data.datasets["test"].origins))
    assert metrics["test/mse_scaled"] == pytest.approx(mse, abs=5e-5)
    assert metrics["test/mae_scaled"] == pytest.approx(mae, abs=5e-5)
    assert metrics["baseline/mse_scaled"] == pytest.approx(metrics["test/mse_scaled"], rel=1e-6)  # the model runs in float32


def test_scaler_is_fitted_on_the_training_rows_only(ett_h1):
    import pandas as pd

    data, _ = compose_run("data=etth1", f"data.path={ett_h1}", "model=last_value")
    raw = pd.read_csv(ett_h1).iloc[:8640, 1:]
    assert np.allclose(data.scaler.mean, raw.mean().to_numpy())
    assert np.allclose(data.scaler.std, raw.std(ddof=0).to_numpy())


def test_baseline_forecasts_by_hand():
    x = torch.arange(2 * 10 * 3, dtype=torch.float32).reshape(2, 10, 3)  # [B, L, C]
    last = LastValue(3, [2, 0], lookback=10, horizon=4)(x)
    assert torch.equal(last, x[:, -1:, [2, 0]].expand(-1, 4, -1))
    season = SeasonalNaive(3, [1], lookback=10, horizon=7, period=3)(x)
    assert torch.equal(season[:, :, 0], x[:, [7, 8, 9, 7, 8, 9, 7], 1])


def test_linear_baseline_has_one_map_per_channel_and_learns_a_ramp():
    torch.manual_seed(0)
    net = LinearNet(2, [0, 1], lookback=8, horizon=4, norm="last", individual=True, decompose=5)
    assert sum(p.numel() for p in net.parameters()) == 2 * (8 * 4 * 2 + 4)
    ramp = torch.arange(12, dtype=torch.float32)[None, :, None].repeat(64, 1, 2) * torch.rand(64, 1, 1)
    x, y = ramp[:, :8], ramp[:, 8:]
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3


def test_sample_config_composes_with_every_model():
    for model in ("gru", "lstm", "linear", "last_value", "seasonal_naive"):
        data, module = compose_run(f"model={model}", "data.lookback=96", *(["model.period=48"] if model == "seasonal_naive" else []))
        x, _ = data.datasets["val"].__getitems__([0, 1])
        assert module(x).shape == (2, data.horizon, len(data.targets))
