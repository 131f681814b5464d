"""Static columns and calendar features of a fleet: ingestion, the network's optional inputs, training, predict and serving.

In-process and small: a generated fleet (tests/test_fleet.py's `make_fleet`) with a static `site`
column, tiny networks, a few hundred training steps at most.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient
from test_fleet import make_fleet, write

from forecast import predict_fleet, pyfunc, training
from forecast.errors import InputError
from forecast.fleet import load_fleet
from forecast.fleet_datamodule import FleetDataModule
from forecast.forecaster import Forecaster
from forecast.frame import CsvSpec
from forecast.networks import build_network
from forecast.recurrent import RecurrentNet
from forecast.windows import Scaler

L, H = 24, 12
SITES = {"m0": "north", "m1": "south", "m2": "north", "m3": "east"}


def sited(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(site=frame["device"].map(SITES))


# --- ingestion -----------------------------------------------------------------------------------


def test_static_columns_are_read_per_device_and_are_not_readings(tmp_path):
    path = write(sited(make_fleet(devices=4, hours=200)).sample(frac=1, random_state=0), tmp_path / "f.csv")  # rows in any order
    fleet = load_fleet(CsvSpec(path=path), ["device"], L + H, static_columns=["site"])
    assert fleet.targets == ["power", "temp"]  # site is neither a target nor a covariate
    assert fleet.static.to_dict("list") == {"site": [SITES[d] for d in fleet.ids["device"]]}
    assert fleet.static_values == [["east", "north", "south"]]
    half = load_fleet(CsvSpec(path=path), ["device"], L + H, share=(1, 2), static_columns=["site"])
    assert half.static_values == fleet.static_values  # every process of a data-parallel training codes values alike
    data = FleetDataModule(path, lookback=L, horizon=H, static_columns="site")  # one name, or a list
    x, y, series, extra = data.datasets["train"].__getitems__([0, len(data.datasets["train"]) - 1])
    assert set(extra) == {"static"} and data.model_args()["static_sizes"] == [3]
    assert [data.static_values[0][c] for c in extra["static"][:, 0]] == [SITES[data.fleet.ids["device"][int(s)]] for s in series]


def test_a_static_column_that_changes_within_a_device_is_refused(tmp_path):
    frame = sited(make_fleet(devices=3, hours=200))
    frame.loc[frame.index[250], "site"] = "west"  # a row of m1
    with pytest.raises(InputError, match=r"column 'site' is not constant for device 'm1': 'south' .*line 2.* and 'west' .*line 252"):
        load_fleet(CsvSpec(path=write(frame, tmp_path / "f.csv")), ["device"], L + H, static_columns=["site"])
    with pytest.raises(InputError, match="'device' is an id column"):
        load_fleet(CsvSpec(path=str(tmp_path / "f.csv")), ["device"], L + H, static_columns=["device"])
    with pytest.raises(InputError, match=r"data.static_columns=\['site', 'site'\] is not a list of distinct column names"):
        load_fleet(CsvSpec(path=str(tmp_path / "f.csv")), ["device"], L + H, static_columns=["site", "site"])
    with pytest.raises(InputError, match="has no id column 'kind'"):
        load_fleet(CsvSpec(path=str(tmp_path / "f.csv")), ["device"], L + H, static_columns=["kind"])


# --- the network ---------------------------------------------------------------------------------


def test_the_default_network_is_unchanged():
    """Parameter counts and outputs on a fixed seed as main's RecurrentNet gave them before static and calendar inputs
    (measured with main's forecast/recurrent.py at commit 9730622, torch 2.13.0 on the CPU)."""
    x = torch.linspace(-2, 2, 2 * 24 * 3).reshape(2, 24, 3)
    main = {
        (): (1886, [-0.130982, -0.201612, 0.105051, 1.883004, 1.812374, 2.119037]),
        (("cell", "lstm"), ("decoder", "direct"), ("channel_independent", False), ("num_layers", 2)): (
            5064,
            [-0.211267, 0.170806, 0.058328, 1.802719, 2.184792, 2.072314],
        ),
    }
    for settings, (params, outputs) in main.items():
        for off in ({}, {"calendar": False, "static_sizes": []}, {"calendar": None, "step": 3_600_000_000_000}):
            torch.manual_seed(0)
            net = RecurrentNet(3, [0, 2], 24, 12, hidden_size=16, segment_len=6, **dict(settings), **off).eval()
            assert sum(p.numel() for p in net.parameters()) == params and net.uses == ()
            with torch.no_grad():
                np.testing.assert_allclose(net(x)[:, :3, 0].flatten().numpy(), outputs, atol=2e-6)


def test_an_unseen_static_value_gets_the_mean_vector():
    torch.manual_seed(0)
    net = RecurrentNet(2, [0], L, H, hidden_size=8, segment_len=6, static_sizes=[3, 2]).eval()
    x = torch.randn(1, L, 2).expand(3, L, 2)
    with torch.no_grad():
        out = net(x, static=torch.tensor([[0, 1], [1, 1], [-1, 1]]))
        assert not torch.equal(out[0], out[1])  # values differ by their vectors
        net.static_embed[0].weight.copy_(net.static_embed[0].weight.mean(dim=0).expand(3, -1))
        torch.testing.assert_close(net(x[:1], static=torch.tensor([[2, 1]])), out[2:])  # unseen = the column's mean vector
        torch.testing.assert_close(net(x[:1]), net(x[:1], static=torch.tensor([[-1, -1]])))  # no codes given = unseen values


def test_calendar_features_follow_the_forecasts_own_timestamps():
    torch.manual_seed(0)
    hour = 3_600_000_000_000
    for decoder in ("parallel", "direct"):
        net = RecurrentNet(1, [0], 12, 12, hidden_size=8, segment_len=6, decoder=decoder, calendar=["hour", "weekday"], step=hour).eval()
        x = torch.randn(1, 12, 1).expand(3, 12, 1)
        monday = pd.Timestamp("2024-01-01 00:00").value  # a Monday
        with torch.no_grad():
            out = net(x, origin=torch.tensor([monday, monday + 24 * 7 * hour, monday + 5 * hour]))
        torch.testing.assert_close(out[0], out[1])  # a week later: the same hour and weekday
        assert not torch.allclose(out[0], out[2])
    codes = net._calendar_vectors(torch.tensor([monday + 3 * 24 * hour + 13 * hour]), 1)  # Thursday 13:00
    torch.testing.assert_close(codes[0, 0], net.calendar_embed["hour"].weight[13] + net.calendar_embed["weekday"].weight[3])
    with pytest.raises(InputError, match="model.calendar='month' is not one of hour, weekday"):
        RecurrentNet(1, [0], 12, 12, calendar=["month"], step=hour)
    with pytest.raises(InputError, match="calendar features are available with data=fleet"):
        RecurrentNet(1, [0], 12, 12, calendar=["hour"])


def _hourly_blocks(tmp_path) -> str:
    """Three meters whose level is high from 12:00 to 17:59 only: six readings of history cannot tell a window before
    noon from one before midnight, the forecast's hour of day can."""
    rng = np.random.default_rng(0)
    stamps = pd.date_range("2024-01-01", periods=24 * 30, freq="1h")
    frames = [
        pd.DataFrame({"timestamp": stamps, "device": f"m{d}", "power": 10 * (d + 1) + 4 * ((stamps.hour >= 12) & (stamps.hour < 18))})
        for d in range(3)
    ]
    frame = pd.concat(frames, ignore_index=True)
    frame["power"] += rng.normal(0, 0.3, len(frame))
    return write(frame, tmp_path / "blocks.csv")


def _val_mse(path: str, calendar) -> float:
    data = FleetDataModule(path, lookback=6, horizon=6, batch_size=64, calendar=bool(calendar))
    torch.manual_seed(0)
    net = RecurrentNet(1, [0], 6, 6, hidden_size=16, segment_len=6, dropout=0.0, calendar=calendar, step=data.fleet.step)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(3):
        for x, y, _series, *extra in data.train_dataloader():
            optimiser.zero_grad()
            torch.nn.functional.mse_loss(net(x, **(extra[0] if extra else {})), y).backward()
            optimiser.step()
    net.eval()
    val = data.datasets["val"]
    x, y, _series, *extra = val.__getitems__(list(range(len(val))))
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(net(x, **(extra[0] if extra else {})), y))


def test_calendar_features_learn_a_level_that_depends_on_the_hour_of_day(tmp_path):
    path = _hourly_blocks(tmp_path)
    without, with_calendar = _val_mse(path, None), _val_mse(path, ["hour"])
    assert with_calendar < 0.5 * without, (with_calendar, without)


# --- forecasts, the bundle, serving ----------------------------------------------------------------


@pytest.fixture
def featured() -> Forecaster:
    """An untrained fleet Forecaster that reads `site` (seen: north, south) and the hour and weekday, for devices a and b."""
    torch.manual_seed(0)
    args = dict(network="recurrent", n_inputs=1, target_index=[0], lookback=L, horizon=H, hidden_size=8, segment_len=6)
    args |= dict(calendar=["hour", "weekday"], step=3_600_000_000_000, static_sizes=[2])
    net = build_network(**args).eval()
    mean, std = np.array([[10.0], [100.0]]), np.array([[2.0], [20.0]])
    f = Forecaster(net, Scaler(np.median(mean, 0), np.median(std, 0)), ["power"], ["power"], "1h", args)
    f.series_columns, f.series_ids, f.series_mean, f.series_std = ["device"], [("a",), ("b",)], mean, std
    f.static_columns, f.static_values = ["site"], [["north", "south"]]
    return f


def request(sites: dict[str, str], start: str = "2025-03-03 00:00") -> pd.DataFrame:
    rng = np.random.default_rng(1)
    stamps = pd.date_range(start, periods=L, freq="1h").astype(str)
    parts = [pd.DataFrame({"timestamp": stamps, "device": d, "site": s, "power": 10 + rng.standard_normal(L)}) for d, s in sites.items()]
    return pd.concat(parts, ignore_index=True)


def served(f: Forecaster, frame: pd.DataFrame) -> pd.DataFrame:
    model = pyfunc.ForecastPyfunc()
    model.forecaster = f
    return model.predict(None, frame)


def test_a_request_gives_static_and_calendar_inputs_for_every_device(featured):
    frame = request({"a": "north", "b": "south"})
    out = served(featured, frame)
    assert list(out.columns) == ["device", "timestamp", "power"] and len(out) == 2 * H and np.isfinite(out["power"]).all()
    raw = frame["power"].to_numpy().reshape(2, L, 1)
    scaler = Scaler(featured.series_mean[:, None], featured.series_std[:, None])
    origin = np.full(2, pd.Timestamp("2025-03-04 00:00").value)  # the first forecast step of both devices
    expected = featured.forecast(raw, scaler=scaler, origin=origin, static=np.array([[0], [1]]))
    np.testing.assert_allclose(out["power"].to_numpy(), expected[:, :, 0].ravel())
    later = served(featured, request({"a": "north", "b": "south"}, start="2025-03-03 05:00"))  # same readings, five hours later
    assert not np.allclose(later["power"], out["power"])
    moved = served(featured, frame.assign(site=frame["site"].replace("south", "north")))  # b at a's site
    np.testing.assert_allclose(moved["power"].iloc[:H], out["power"].iloc[:H])
    assert not np.allclose(moved["power"].iloc[H:], out["power"].iloc[H:])
    unseen = served(featured, frame.assign(site=frame["site"].replace("south", "far away")))  # a site never seen: the mean vector
    with torch.no_grad():
        featured.net.static_embed[0].weight.copy_(featured.net.static_embed[0].weight.mean(dim=0).expand(2, -1))
    np.testing.assert_allclose(unseen["power"].iloc[H:], served(featured, frame)["power"].iloc[H:], rtol=1e-6)


def test_a_request_without_the_static_column_or_timestamps_is_refused(featured):
    with pytest.raises(pyfunc.BadInput, match="lacks the static column"):
        served(featured, request({"a": "north"}).drop(columns="site"))
    with pytest.raises(pyfunc.BadInput, match="calendar features: send each reading's timestamp"):
        served(featured, request({"a": "north"}).drop(columns="timestamp"))
    with pytest.raises(pyfunc.BadInput, match="row 24 has no site for device a"):
        served(featured, request({"a": "north"}).assign(site=None))


def test_the_bundle_carries_the_static_values_and_old_bundles_load(featured, tmp_path):
    loaded = Forecaster.load(featured.save(tmp_path / "model.pt"))
    assert loaded.static_columns == ["site"] and loaded.static_values == [["north", "south"]] and loaded.uses == ("origin", "static")
    assert loaded.static_codes([["south"], [" north "], ["west"]]).ravel().tolist() == [1, 0, -1]
    raw = np.full((1, L, 1), 10.0)
    with pytest.raises(InputError, match="reads calendar features"):
        loaded.forecast(raw, static=np.array([[0]]))  # a forecast never silently drops an input its network reads
    with pytest.raises(InputError, match=r"reads static columns \(site\)"):
        loaded.forecast(raw, origin=np.array([0]))
    bundle = torch.load(tmp_path / "model.pt", weights_only=True)
    for key in ("static_columns", "static_values"):
        del bundle[key]
    torch.save(bundle, tmp_path / "old.pt")
    assert Forecaster.load(tmp_path / "old.pt").static_columns == []


# --- training, predict ---------------------------------------------------------------------------


def test_training_and_predict_with_static_columns_and_calendar(tmp_path):
    frame = sited(make_fleet(devices=4, hours=300))
    write(frame, tmp_path / "f.csv")
    overrides = ["data=fleet", f"data.path={tmp_path / 'f.csv'}", "data.lookback=24", "data.horizon=12", "model.hidden_size=8"]
    overrides += ["model.segment_len=6", "trainer.max_epochs=1", "trainer.accelerator=cpu", "data.static_columns=[site]"]
    overrides += ["model.calendar=[hour,weekday]"]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        latest = compose("predict", overrides=["data=fleet", f"data.path={tmp_path / 'latest.csv'}", "output=next.csv"])
    cwd, uri = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(tmp_path)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/mlflow.db"
    try:
        training.train(cfg, tmp_path / "outputs", "test")
        client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
        (run,) = client.search_runs([client.get_experiment_by_name("forecast").experiment_id])
        assert run.info.status == "FINISHED" and all(np.isfinite(v) for v in run.data.metrics.values())
        model, f = pyfunc.load(f"runs:/{run.info.run_id}/model")
        assert f.static_columns == ["site"] and f.static_values == [["east", "north", "south"]] and f.uses == ("origin", "static")
        # predict: two devices, one of them new at a site never seen
        recent = frame[frame["device"].isin(["m0", "m1"])].groupby("device").tail(L).copy()
        recent.loc[recent["device"] == "m1", ["device", "site"]] = ["m9", "west"]
        write(recent, tmp_path / "latest.csv")
        fleet = predict_fleet.read_fleet(latest.data, f)
        out, summary = predict_fleet.forecast_fleet(model, f, fleet, False, "latest.csv")
    finally:
        os.chdir(cwd)
        os.environ.pop("MLFLOW_TRACKING_URI") if uri is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", uri)
    assert list(out["device"].unique()) == ["m0", "m9"] and len(out) == 2 * H and np.isfinite(out["power"]).all()
    assert "1 seen in training, 1 new" in summary


def test_the_retrain_holdout_scores_a_model_that_reads_static_columns_and_the_calendar(tmp_path):
    from types import SimpleNamespace

    from forecast.promotion_fleet import FleetHoldout

    write(sited(make_fleet(devices=4, hours=300)), tmp_path / "f.csv")
    data = FleetDataModule(str(tmp_path / "f.csv"), "device", lookback=24, horizon=12, static_columns=["site"])
    torch.manual_seed(0)
    args = dict(network="recurrent", n_inputs=len(data.inputs), target_index=data.target_index, lookback=24, horizon=12)
    args |= dict(hidden_size=8, segment_len=6, calendar=["hour"], step=3_600_000_000_000, static_sizes=[len(data.fleet.static_values[0])])
    f = Forecaster(build_network(**args).eval(), data.scaler, data.inputs, data.targets, "1h", args)
    f.series_columns, f.series_ids = ["device"], list(data.fleet.ids.itertuples(index=False, name=None))
    f.series_mean, f.series_std = data.mean, data.std
    f.static_columns, f.static_values = ["site"], data.fleet.static_values
    holdout = FleetHoldout(data, "mse_scaled")
    scores = holdout.score("champion", SimpleNamespace(model=f, label="forecast/1", architecture="gru", unloadable=None))
    assert isinstance(scores, dict) and all(np.isfinite(list(scores.values())))  # scored with its inputs, not refused
    plain = FleetHoldout(FleetDataModule(str(tmp_path / "f.csv"), "device", lookback=24, horizon=12), "mse_scaled")
    why = plain.score("champion", SimpleNamespace(model=f, label="forecast/1", architecture="gru", unloadable=None))
    assert why == "it reads the static column(s) site; add them to data.static_columns"


def test_a_baseline_asked_for_static_inputs_names_the_setting_to_unset():
    shapes = {"n_inputs": 2, "target_index": [0], "lookback": 24, "horizon": 6}
    with pytest.raises(InputError, match=r"model.network=last_value does not read the inputs that data.static_columns asks for"):
        build_network("last_value", static_sizes=[3], **shapes)
    with pytest.raises(InputError, match=r"model.network=seasonal_naive: got an unexpected keyword argument 'width'"):
        build_network("seasonal_naive", width=3, **shapes)
