"""Fleets outside training: the generated fleet, predict and serving for many devices, retrain and compare per device."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli, store_runs

from forecast import sample

# --- the generated fleet (python -m forecast.sample fleet)


@pytest.fixture(scope="module")
def meters(tmp_path_factory) -> pd.DataFrame:
    path = tmp_path_factory.mktemp("fleet") / "meters.csv"
    sample.main(["fleet", "--devices", "40", "--days", "60", "--freq", "1h", "--sites", "3", "--output", str(path)])
    return pd.read_csv(path, parse_dates=["timestamp"], keep_default_na=False, na_values=[""])


def test_fleet_is_deterministic_and_a_seed_changes_it(tmp_path):
    args = ["fleet", "--devices", "5", "--days", "10", "--freq", "30min"]
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        sample.main([*args, "--seed", seed, "--output", str(tmp_path / f"{name}.csv")])
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()


def test_fleet_is_long_with_a_static_site_per_device(meters):
    assert list(meters.columns) == ["timestamp", "device", "power_kw", "temperature_c", "site"]
    assert meters["device"].nunique() == 40 and (meters.groupby("device")["site"].nunique() == 1).all()
    assert meters.groupby("device")["timestamp"].is_monotonic_increasing.all()
    assert meters["power_kw"].min() >= 0 and meters["temperature_c"].dropna().between(-40, 50).all()


def test_fleet_has_late_installs_outages_and_stuck_meters(meters):
    first = meters.groupby("device")["timestamp"].min()
    late = (first > first.min()).sum()
    assert 4 <= late <= 20  # a quarter of 40, give or take chance
    steps = meters.groupby("device")["timestamp"].diff().dropna() / pd.Timedelta("1h")
    gaps = steps[steps > 1] - 1  # hours missing in each outage
    assert len(gaps) >= 2 * 40 and gaps.between(6, 48 * 3).all()  # 2-6 outages of 6-48 h each (neighbours may merge)
    runs = meters.groupby(["device", (meters["power_kw"] != meters["power_kw"].shift()).cumsum()]).size()
    assert (runs >= 6).sum() >= 1  # a stuck meter repeats its value for hours
    assert meters["power_kw"].isna().sum() + meters["temperature_c"].isna().sum() <= 0.001 * len(meters) * 2


def test_fleet_as_a_folder_holds_one_file_per_device(tmp_path):
    sample.main(["fleet", "--devices", "3", "--days", "8", "--folder", str(tmp_path / "meters")])
    files = sorted(p.name for p in (tmp_path / "meters").iterdir())
    assert files == ["m0.csv", "m1.csv", "m2.csv"]
    one = pd.read_csv(tmp_path / "meters" / "m1.csv")
    assert list(one.columns) == ["timestamp", "power_kw", "temperature_c"] and 0 < len(one) < 8 * 24  # outages removed rows


def test_fleet_refuses_a_step_that_does_not_divide_a_day(capsys):
    with pytest.raises(SystemExit) as stop:
        sample.main(["fleet", "--devices", "3", "--days", "8", "--freq", "7h"])
    assert stop.value.code == 2 and "--freq 7h must divide a day" in capsys.readouterr().err


def test_fleet_profile_differs_between_weekdays_and_weekends(meters):
    office_hours = meters[meters["timestamp"].dt.hour.between(10, 16)]
    weekend = office_hours["timestamp"].dt.dayofweek >= 5
    assert office_hours.loc[~weekend, "power_kw"].mean() > office_hours.loc[weekend, "power_kw"].mean()
    assert np.isfinite(meters["power_kw"].dropna()).all()


# --- the comparison report, device by device (forecast/comparison_fleet.py)


def test_wilcoxon_signed_rank_exact_and_approximate():
    from forecast import stats

    assert stats.wilcoxon_signed_rank([1, 2, 3, 4, 5], [2, 3, 4, 5, 6]).p_value == pytest.approx(2 / 32)  # all 5 one way
    assert stats.wilcoxon_signed_rank([1, 2, 3, 4], [2, 1, 4, 3]).p_value == pytest.approx(1.0)
    assert stats.wilcoxon_signed_rank([1, 1, 1], [1, 1, 1]).n == 0
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 150), rng.normal(0.2, 1, 150)
    exact = stats.wilcoxon_signed_rank(a, b)
    stats.EXACT_PAIRS, kept = 0, stats.EXACT_PAIRS
    try:
        approx = stats.wilcoxon_signed_rank(a, b)
    finally:
        stats.EXACT_PAIRS = kept
    assert exact.exact and not approx.exact and approx.p_value == pytest.approx(exact.p_value, abs=0.005)


def fake_comparison(n_devices: int, gru_better: int, seeds: int = 2):
    """A Comparison of gru and lstm on a fleet, as collect() would read it, with GRU better on `gru_better` devices."""
    from types import SimpleNamespace

    from forecast.comparison_report import Comparison

    rng = np.random.default_rng(1)
    devices = [f"m{i:03d}" for i in range(n_devices)]
    base = rng.uniform(0.2, 1.0, n_devices)
    rows, by_series, by_window = [], {}, {}
    for arch, sign in (("gru", -1), ("lstm", 1)):
        for seed in range(seeds):
            rid = f"{arch}{seed}"
            shift = np.where(np.arange(n_devices) < gru_better, 0.05, -0.05) * sign
            mse = base + shift + rng.normal(0, 0.001, n_devices)
            by_series[rid] = pd.DataFrame({"site": "s1", "device": devices, "windows": 10, "mae": mse, "rmse": mse, "mse_scaled": mse})
            by_window[rid] = pd.DataFrame(  # several devices per origin, as a fleet writes them
                {
                    "origin": np.repeat(np.arange(5), n_devices),
                    "timestamp": np.repeat(np.arange(5), n_devices),
                    "mse_scaled": np.tile(mse, 5),
                }
            )
            rows.append(
                {"run_id": rid, "condition": "base", "architecture": arch, "seed": seed, "test/mse_scaled": mse.mean(), "model/params": 100}
            )
    parent = SimpleNamespace(info=SimpleNamespace(run_id="parent"), data=SimpleNamespace(params={}, tags={}))
    return Comparison(parent, pd.DataFrame(rows), ["gru", "lstm"], ["base"], 24, by_window, {}, {}, {}, None, by_series)


def test_the_report_pairs_gru_and_lstm_device_by_device():
    from forecast import comparison_report as report

    c = fake_comparison(60, gru_better=50)
    v = report.verdict(c, "base", "gru", "lstm")
    assert v.series is not None and v.series.n == 60 and v.series.ids == ["site", "device"]
    assert (v.series.wins_a, v.series.wins_b) == (50, 10) and v.series.test.p_value < 0.001
    text = report.sentence(v, "meters")
    assert "the GRU is more accurate device by device: across 60 devices the GRU has the lower test scaled MSE on 50 (83%)" in text
    assert "and the LSTM on 10 (Wilcoxon signed-rank p < 0.001)" in text
    section = "\n".join(report.comparison_fleet.section([("base", v.series)], report.name, report.p_text))
    assert "| base | a = GRU, b = LSTM | 60 | 50 / 10 / 0 |" in section


def test_an_even_fleet_is_no_significant_difference_and_a_single_series_has_no_pairing():
    from forecast import comparison_report as report

    v = report.verdict(fake_comparison(40, gru_better=20), "base", "gru", "lstm")
    assert v.series.test.p_value > 0.05 and "do not differ significantly device by device" not in report.sentence(v, "m")
    assert "their accuracy does not differ significantly device by device (across 40 devices" in report.sentence(v, "m")
    c = fake_comparison(40, gru_better=30)
    c.by_series.clear()  # a single-series comparison logs no test_by_series.parquet
    assert report.verdict(c, "base", "gru", "lstm").series is None


# --- retrain, device by device (forecast/promotion.py)


def test_lost_badly_names_the_devices_a_winning_challenger_loses_badly():
    from forecast.promotion_fleet import lost_badly

    by_series = pd.DataFrame(
        {
            "device": ["a", "b", "c", "d"],
            "champion": [1.0, 1.0, 1.0, 0.0],
            "gru": [0.5, 0.5, 2.5, 0.1],  # better on average, but 2.5x worse on c (and worse than a perfect champion on d)
            "lstm": [3.0, 3.0, 3.0, 3.0],  # worse on average: not a winner, not checked
        }
    )
    found = lost_badly(by_series, ["device"], {"champion": 0.75, "gru": 0.9 - 0.2, "lstm": 3.0}, "champion", ratio=2.0)
    assert list(found) == ["gru"]
    assert list(found["gru"]["device"]) == ["d", "c"] and found["gru"]["ratio"].tolist() == [np.inf, 2.5]
    assert lost_badly(by_series, ["device"], {"champion": 0.75, "gru": 0.7}, "champion", ratio=3.0)["gru"]["device"].tolist() == ["d"]


def test_the_fleet_holdout_scores_every_device_with_each_contenders_own_scalers(tmp_path):
    from types import SimpleNamespace

    import torch

    from forecast.fleet_datamodule import FleetDataModule
    from forecast.forecaster import Forecaster
    from forecast.networks import build_network
    from forecast.promotion_fleet import FleetHoldout, own_scaler

    sample.main(["fleet", "--devices", "8", "--days", "30", "--output", str(tmp_path / "m.csv")])
    data = FleetDataModule(str(tmp_path / "m.csv"), "device", lookback=48, horizon=24)
    holdout = FleetHoldout(data, "mse_scaled")
    baseline = holdout.baseline()
    torch.manual_seed(0)
    args = dict(network="recurrent", n_inputs=2, target_index=[0, 1], lookback=24, horizon=24, hidden_size=8, segment_len=12)
    f = Forecaster(build_network(**args).eval(), data.scaler, data.inputs, data.targets, "1h", args)
    seen = list(data.fleet.ids.itertuples(index=False, name=None))[:3]  # the champion saw 3 of the devices, with lookback 24
    f.series_columns, f.series_ids, f.series_mean, f.series_std = ["device"], seen, data.mean[:3], data.std[:3]
    champion = SimpleNamespace(model=f, label="forecast/1", architecture="gru", unloadable=None)
    scores = holdout.score("champion", champion)
    assert set(scores) == {"mse_scaled", "mae_scaled", "mae", "rmse", "crps"} and all(np.isfinite(list(scores.values())))
    assert list(holdout.by_series.columns) == ["device", "windows", "baseline", "champion"] and holdout.by_series["champion"].gt(0).all()
    assert baseline["mse_scaled"] == pytest.approx(
        np.average(holdout.by_series["baseline"], weights=holdout.by_series["windows"]), rel=0.05
    )
    # its own scalers: a seen device's training scaler, an unseen one's window statistics (cold start)
    x = np.random.default_rng(0).normal(50, 3, (2, 24, 2))
    scaler = own_scaler(f, np.array([1, -1]), x)
    assert np.allclose(scaler.mean[0, 0], data.mean[1]) and np.allclose(scaler.mean[1, 0], x[1].mean(axis=0))
    wide = {**args, "lookback": 96}  # a champion that needs more history than this data's windows give
    g = Forecaster(
        build_network(**wide),
        data.scaler,
        data.inputs,
        data.targets,
        "1h",
        wide,
        series_columns=["device"],
        series_ids=seen,
        series_mean=data.mean[:3],
        series_std=data.std[:3],
    )
    longer = SimpleNamespace(model=g, label="forecast/2", architecture="gru", unloadable=None)
    assert "lookback 96 is longer than data.lookback=48" in holdout.score("champion", longer)


# --- serving a fleet (forecast/pyfunc.py: predict_fleet)

L, H = 24, 6


@pytest.fixture(scope="module")
def fleet_model():
    """A small untrained fleet Forecaster that saw devices a and b (each with its own scaler)."""
    import torch

    from forecast.forecaster import Forecaster
    from forecast.networks import build_network
    from forecast.windows import Scaler

    torch.manual_seed(0)
    args = dict(network="recurrent", n_inputs=2, target_index=[0], lookback=L, horizon=H, hidden_size=8, segment_len=6)
    net = build_network(**args).eval()
    mean, std = np.array([[10.0, 5.0], [100.0, -3.0]]), np.array([[2.0, 1.0], [20.0, 4.0]])
    f = Forecaster(net, Scaler(np.median(mean, 0), np.median(std, 0)), ["power_kw", "temperature_c"], ["power_kw"], "1h", args)
    f.series_columns, f.series_ids, f.series_mean, f.series_std = ["device"], [("a",), ("b",)], mean, std
    return f


def request(devices: dict[str, tuple[float, float]], rows: int = L, interleave: bool = True) -> pd.DataFrame:
    """Long-form readings of each device (level, spread), hourly, ending at the same time; rows interleaved across devices."""
    rng = np.random.default_rng(2)
    parts = []
    for name, (level, spread) in devices.items():
        stamps = pd.date_range("2025-03-01", periods=rows, freq="1h")
        parts.append(
            pd.DataFrame(
                {
                    "timestamp": stamps.astype(str),
                    "device": name,
                    "power_kw": level + spread * rng.standard_normal(rows),
                    "temperature_c": 5 + rng.standard_normal(rows),
                    "site": "north",  # a column the model does not read is ignored
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values(["timestamp", "device"], kind="stable", ignore_index=True) if interleave else frame


def served(f, frame):
    from forecast.pyfunc import ForecastPyfunc

    model = ForecastPyfunc()
    model.forecaster = f
    return model.predict(None, frame)


def test_a_fleet_request_answers_every_device_in_long_form(fleet_model):
    frame = request({"b": (100, 20), "a": (10, 2), "new": (1000, 300)}, rows=L + 5)
    out = served(fleet_model, frame)
    assert list(out.columns) == ["device", "timestamp", "power_kw"] and len(out) == 3 * H
    assert list(out["device"].unique()) == ["a", "b", "new"]  # in the order the devices first appear (rows sorted by time, then device)
    assert (out["timestamp"].iloc[:H] == pd.date_range("2025-03-02 05:00", periods=H, freq="1h")).all()
    assert np.isfinite(out["power_kw"]).all()
    # a seen device: its training-span scaler; the same forecast as the Forecaster's on its last L rows
    from forecast.windows import Scaler

    a = frame[frame["device"] == "a"].iloc[-L:][fleet_model.inputs].to_numpy()[None]
    expected = fleet_model.forecast(a, scaler=Scaler(fleet_model.series_mean[:1, None], fleet_model.series_std[:1, None]))
    assert np.allclose(out.loc[out["device"] == "a", "power_kw"], expected[0, :, 0])


def test_an_unseen_device_is_scaled_on_its_own_readings(fleet_model):
    """Cold start: the same readings in other units (x 1000 + 7) give the same forecast in those units."""
    frame = request({"new": (50, 5)}, interleave=False)
    scaled = frame.assign(power_kw=frame["power_kw"] * 1000 + 7, temperature_c=frame["temperature_c"] * 1000 + 7)
    one, other = served(fleet_model, frame)["power_kw"], served(fleet_model, scaled)["power_kw"]
    assert np.allclose(other, one * 1000 + 7, rtol=1e-4)
    assert not np.allclose(served(fleet_model, frame.assign(device="a"))["power_kw"], one)  # seen as 'a': a's own scaler


def test_a_fleet_request_without_timestamps_numbers_the_steps(fleet_model):
    out = served(fleet_model, request({"a": (10, 2), "b": (100, 20)}).drop(columns="timestamp"))
    assert list(out.columns) == ["device", "step", "power_kw"] and out["step"].tolist() == list(range(1, H + 1)) * 2


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.drop(columns="device"), "model input lacks the id column(s) device: this model forecasts a fleet"),
        (lambda r: r.drop(index=[0, 2]), "model input has 22 rows for device a; the model needs its last 24 readings"),
        (lambda r: r.assign(power_kw=r["power_kw"].astype(object).where(r.index != 31, "n/a")), "column power_kw in row 32 holds 'n/a'"),
        (lambda r: r.assign(device=r["device"].where(r.index != 5, None)), "model input row 6 has no device"),
        (
            lambda r: r.assign(power_kw=r["power_kw"].where(r.index != 20)),
            "model input column power_kw is missing at 2025-03-01 10:00:00 (row 21)",
        ),
        (lambda r: r.drop(index=21), "model input has 23 rows for device b"),
        (
            lambda r: r.assign(timestamp=r["timestamp"].where(r.index != 47, "2025-03-05 00:00:00")),
            "model input timestamp in row 48 is 2025-03-05 00:00:00 after 2025-03-01 22:00:00 for device b",
        ),
        (lambda r: r.assign(power_kw=r["power_kw"].where(r.index != 46, np.inf)), "holds inf at 2025-03-01 23:00:00 (row 47) for device a"),
    ],
)
def test_bad_fleet_requests_name_the_device_row_and_column(fleet_model, change, message):
    from forecast.pyfunc import BadInput

    with pytest.raises(BadInput) as bad:
        served(fleet_model, change(request({"a": (10, 2), "b": (100, 20)})))
    assert message in bad.value.message and "\n" not in bad.value.message


# --- end to end: train a fleet, predict every device (seen or not), the logged model as MLflow serves it


@pytest.mark.e2e
def test_retrain_then_predict_every_device_of_a_fleet_seen_or_not(tmp_path):
    """A retrain of a fleet (per-device scores recorded), predict for seen and unseen devices, the logged model as served."""
    import mlflow
    from mlflow.exceptions import MlflowException

    sample.main(["fleet", "--devices", "10", "--days", "30", "--output", str(tmp_path / "meters.csv")])
    tiny = ["data=fleet", "data.lookback=48", "data.horizon=24"]
    train = ["data.path=meters.csv", "challengers=[gru]", 'train_args=["model.hidden_size=16","trainer.max_epochs=1"]', "name=fleet"]
    done = run_cli("forecast.retrain", *tiny, *train, "per_device_loss_ratio=1.0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "holdout: " in done.stdout and "devices lost badly against the baseline (mse_scaled above 1x): gru: " in done.stdout
    client, runs = store_runs(tmp_path, "tags.kind = 'retrain'")
    assert runs[0].data.tags["decision"] == "promote" and runs[0].data.tags["devices_lost_badly"].startswith("gru: ")
    assert runs[0].data.metrics["gru/devices_lost_badly"] >= 0
    scores = pd.DataFrame(**mlflow.artifacts.load_dict(f"{runs[0].info.artifact_uri}/per_device/scores.json"))
    assert list(scores.columns) == ["device", "windows", "baseline", "gru"] and len(scores) >= 5

    meters = pd.read_csv(tmp_path / "meters.csv", parse_dates=["timestamp"])
    last = meters.groupby("device").tail(48)
    steady = last.groupby("device").agg(span=("timestamp", lambda t: t.iloc[-1] - t.iloc[0]), gaps=("power_kw", lambda v: v.isna().sum()))
    complete = list(steady.index[(steady["span"] == pd.Timedelta("47h")) & (steady["gaps"] == 0)])  # outages spare their last 48 h
    assert len(complete) >= 4, steady
    rename = {complete[-1]: "new-a", complete[-2]: "new-b"}  # two devices the model never saw
    latest = meters[meters["device"].isin(complete)].replace({"device": rename})
    latest.to_csv(tmp_path / "latest.csv", index=False)
    done = run_cli("forecast.predict", *tiny, "data.path=latest.csv", "model_uri=models:/fleet/1", "output=next.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = pd.read_csv(tmp_path / "next.csv")
    assert list(out.columns) == ["device", "last_reading", "timestamp", "power_kw", "temperature_c"]
    assert set(out["device"]) == set(latest["device"]) and (out.groupby("device").size() == 24).all()
    assert np.isfinite(out[["power_kw", "temperature_c"]]).all(axis=None)
    assert f"for {len(complete)} devices ({len(complete) - 2} seen in training, 2 new: cold start)" in done.stdout

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/fleet/1")
    assert model.metadata.get_output_schema().input_names()[:2] == ["device", "timestamp"]
    example = model.input_example
    assert example["device"].nunique() == 2  # the example request holds several devices, in long form
    answer = model.predict(example)
    assert list(answer["device"].unique()) == list(example["device"].unique()) and len(answer) == 2 * 24
    with pytest.raises(MlflowException) as bad:  # the scoring server answers this with HTTP 400 and the one line
        model.predict(example.drop(columns="device"))
    assert bad.value.get_http_status_code() == 400 and "lacks the id column(s) device" in bad.value.message

    latest = latest.astype({"power_kw": object})
    latest.loc[latest.index[-1], "power_kw"] = "12 kW"
    latest.to_csv(tmp_path / "bad.csv", index=False)
    done = run_cli("forecast.predict", *tiny, "data.path=bad.csv", "model_uri=models:/fleet/1", "output=next.csv", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "power_kw" in done.stderr and "Traceback" not in done.stderr


# --- many machines: two CPU processes as two nodes of one DDP training, each holding its own share of the devices


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# sitecustomize for the nodes of the two-node test: every process notes the devices each load_fleet call kept
WATCH_LOADS = """
import json, os
import forecast.fleet

_load_fleet = forecast.fleet.load_fleet


def load_fleet(*args, **kwargs):
    fleet = _load_fleet(*args, **kwargs)
    with open(os.environ["FLEET_LOADS"], "a") as out:
        out.write(json.dumps({"node": os.environ.get("NODE_RANK"), "devices": len(fleet)}) + "\\n")
    return fleet


forecast.fleet.load_fleet = load_fleet
"""


@pytest.mark.e2e
def test_two_nodes_each_train_on_their_own_share_of_the_devices(tmp_path):
    import json
    import subprocess
    import sys

    import mlflow

    sample.main(["fleet", "--devices", "10", "--days", "30", "--output", str(tmp_path / "meters.csv")])
    (tmp_path / "watch").mkdir()
    (tmp_path / "watch" / "sitecustomize.py").write_text(WATCH_LOADS)
    command = [sys.executable, "-m", "forecast.train", "data=fleet", "data.path=meters.csv", "data.lookback=48", "data.horizon=24"]
    command += [
        "model.hidden_size=16",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.num_nodes=2",
        "trainer.max_epochs=1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "RANK", "LOCAL_RANK", "SLURM"))}
    env |= {"MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    env |= {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "watch"), env.get("PYTHONPATH")])), "FLEET_LOADS": "loads.jsonl"}
    nodes = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env | {"NODE_RANK": str(r), "WORLD_SIZE": "2"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "rank 0 of 2: 5 devices of this process's share" in outputs[0]  # devices 0, 2, 4, ... on node 0
    assert "rank 1 of 2: 5 devices of this process's share" in outputs[1]
    assert "MEMBER: 2/2" in outputs[1] and "registered" not in outputs[1]
    loads = [json.loads(line) for line in (tmp_path / "loads.jsonl").read_text().splitlines()]
    assert sorted(loads, key=lambda x: x["node"]) == [{"node": "0", "devices": 5}, {"node": "1", "devices": 5}]  # never the whole fleet
    _, runs = store_runs(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # one training, one run (rank zero records)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    run = f"runs:/{runs[0].info.run_id}"
    devices = {f"m{d}" for d in range(10)}
    by_series = pd.read_parquet(mlflow.artifacts.download_artifacts(f"{run}/evaluation/test_by_series.parquet"))
    assert set(by_series["device"]) <= devices and len(by_series) >= 8  # every device with test windows, from both shares
    by_window = pd.read_parquet(mlflow.artifacts.download_artifacts(f"{run}/evaluation/test_by_window.parquet"))
    assert by_window["origin"].is_unique and by_window["series"].nunique() == len(by_series)
    assert by_window.groupby("series").size().sort_values().tolist() == sorted(by_series["windows"])  # every window, once
    ingested = pd.read_parquet(mlflow.artifacts.download_artifacts(f"{run}/evaluation/data_by_series.parquet"))
    assert set(ingested.query("status == 'kept'")["device"]) == devices
    report = mlflow.artifacts.load_dict(f"{run}/data_report.json")
    assert report["devices_kept"] == 10 and report["rows"] == ingested.query("status == 'kept'")["rows"].sum()
    metrics = runs[0].data.metrics
    assert metrics["test/series_mse_scaled_p50"] == pytest.approx(by_series["mse_scaled"].median())
    model = mlflow.pyfunc.load_model(f"{run}/model")
    assert len(model.unwrap_python_model().forecaster.series_ids) == 10  # every device's scaler is in the saved model


@pytest.mark.parametrize(
    "env, rank",
    [
        ({}, 0),
        ({"NODE_RANK": "1"}, 4),  # a node launched by environment variables: its first process
        ({"NODE_RANK": "1", "LOCAL_RANK": "3"}, 7),  # Lightning's own launcher, the fourth process of node 1
        ({"RANK": "5", "NODE_RANK": "1"}, 5),  # torchrun sets the global rank itself
        ({"SLURM_PROCID": "6", "SLURM_NTASKS": "8"}, 6),  # srun
        ({"SLURM_PROCID": "6", "SLURM_NTASKS": "1"}, 0),  # an interactive allocation that did not launch these processes
    ],
)
def test_each_process_knows_its_rank_before_lightning_launches(monkeypatch, env, rank):
    from forecast.fleet_share import launch_rank

    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launch_rank(world_size=8, num_nodes=2) == rank


def test_own_share_hands_out_the_same_number_of_windows_on_every_process():
    from forecast.fleet_share import OwnShare

    train = OwnShare(range(100), count=60, shuffle=True)  # this process has 100 windows; the fewest any has is 60
    first = list(train)
    train.set_epoch(1)
    second = list(train)
    assert len(train) == len(first) == len(second) == 60 and len(set(first)) == 60 and first != second
    assert list(OwnShare(range(7), count=7, shuffle=False)) == list(range(7))
