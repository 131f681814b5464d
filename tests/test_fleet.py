"""Fleets: ingestion of both layouts, one split in time, per-device scaling, masked channels, cold start, per-device scores.

Everything runs in-process on a small generated fleet (`make_fleet`), except one command-line
check of the exit status of bad input.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, run_cli
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from forecast import training
from forecast.errors import InputError
from forecast.fleet import load_fleet
from forecast.fleet_datamodule import FleetDataModule
from forecast.fleet_evaluate import forecast_split
from forecast.forecaster import Forecaster
from forecast.frame import CsvSpec
from forecast.lightning_module import ForecastModule
from forecast.recurrent import RecurrentNet
from forecast.windows import Scaler

START = pd.Timestamp("2024-01-01")
L, H = 24, 12
SMALL = {"lookback": L, "horizon": H}


def make_fleet(devices: int = 5, hours: int = 400, late: dict | None = None, outages: dict | None = None, seed: int = 0) -> pd.DataFrame:
    """Hourly readings of `devices` meters (power and temp): late = {device: first hour}, outages = {device: (from, to)} hours."""
    rng = np.random.default_rng(seed)
    frames = []
    for d in range(devices):
        hour = np.arange((late or {}).get(d, 0), hours)
        keep = np.ones(len(hour), bool)
        if outages and d in outages:
            keep = (hour < outages[d][0]) | (hour >= outages[d][1])
        hour = hour[keep]
        power = 10 * (d + 1) + (d + 1) * np.sin(2 * np.pi * hour / 24) + rng.normal(0, 0.2, len(hour))
        temp = 20 + np.cos(2 * np.pi * hour / 24) + rng.normal(0, 0.1, len(hour))
        frames.append(pd.DataFrame({"timestamp": START + pd.to_timedelta(hour, "h"), "device": f"m{d}", "power": power, "temp": temp}))
    return pd.concat(frames, ignore_index=True)


def write(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False, float_format="%.4f")
    return str(path)


def device(data, name: str) -> int:
    return int(np.flatnonzero(data.fleet.ids["device"] == name)[0])


def windows_of(data, split: str) -> pd.Series:
    """Windows per device name in a split."""
    ds = data.datasets[split]
    numbers = ds.series_of(torch.from_numpy(ds.origins)).numpy()
    return pd.Series(np.bincount(numbers, minlength=len(data.fleet)), index=data.fleet.ids["device"])


# --- ingestion ---------------------------------------------------------------------------------


def test_long_file_each_device_on_its_own_span(tmp_path):
    fleet = load_fleet(CsvSpec(path=write(make_fleet(late={1: 100}, outages={2: (200, 230)}), tmp_path / "f.csv")), ["device"], L + H)
    table = fleet.report.devices.set_index("device")
    assert list(fleet.ids["device"]) == ["m0", "m1", "m2", "m3", "m4"]
    assert fleet.length.tolist() == [400, 300, 400, 400, 400]  # m1 installed at hour 100: no rows before
    assert pd.Timestamp(table.loc["m1", "first"]) == START + pd.Timedelta("100h")
    assert table.loc["m2", "masked"] == 30 * 2 and table.loc["m2", "longest_gap"] >= 30  # both readings of the outage
    assert table["masked"].drop("m2").eq(0).all()
    frame = fleet.frame(2)
    assert frame.iloc[200:230].isna().all().all() and frame.iloc[:200].notna().all().all()
    assert np.isnan(fleet.values[fleet.start - 1]).all()  # a NaN row before every device
    lines = "\n".join(fleet.report.lines())
    assert "5 devices, 5 kept, 0 left out; every 1h" in lines and "worst: m2: 60 masked" in lines


def test_folder_of_one_file_per_device_reads_as_the_long_file(tmp_path):
    frame = make_fleet(late={1: 100}, outages={2: (200, 203)})
    (tmp_path / "meters").mkdir()
    for name, rows in frame.groupby("device"):
        write(rows.drop(columns="device"), tmp_path / "meters" / f"{name}.csv")
    folder = load_fleet(CsvSpec(path=str(tmp_path / "meters")), ["device"], L + H)
    long = load_fleet(CsvSpec(path=write(frame, tmp_path / "f.csv")), ["device"], L + H)
    assert folder.ids["device"].tolist() == long.ids["device"].tolist()
    np.testing.assert_array_equal(folder.values, long.values)
    assert folder.report.devices.set_index("device").loc["m2", "interpolated"] == 3 * 2  # a 3-step gap, max_gap 3


def test_two_id_columns_and_unsorted_rows(tmp_path):
    frame = make_fleet(devices=4).sample(frac=1.0, random_state=0)  # shuffled rows
    frame["site"] = np.where(frame["device"].isin(["m0", "m1"]), "north", "south")
    frame["device"] = frame["device"].replace({"m2": "m0", "m3": "m1"})  # the same device names at two sites
    fleet = load_fleet(CsvSpec(path=write(frame, tmp_path / "f.csv")), ["site", "device"], L + H)
    assert sorted(fleet.ids.itertuples(index=False, name=None)) == [("north", "m0"), ("north", "m1"), ("south", "m0"), ("south", "m1")]
    assert (fleet.length == 400).all() and not np.isnan(fleet.values[fleet.start[0] : fleet.start[0] + 400]).any()


def test_a_share_of_the_devices_keeps_the_whole_fleets_span(tmp_path):
    path = write(make_fleet(devices=5, late={1: 100, 3: 100}), tmp_path / "f.csv")
    whole = load_fleet(CsvSpec(path=path), ["device"], L + H)
    shares = [load_fleet(CsvSpec(path=path), ["device"], L + H, share=(rank, 2)) for rank in (0, 1)]
    assert [s.ids["device"].tolist() for s in shares] == [["m0", "m2", "m4"], ["m1", "m3"]]
    assert all(s.span == whole.span for s in shares) and shares[1].span[0] < shares[1].first.min()
    np.testing.assert_array_equal(shares[1].frame(0).to_numpy(), whole.frame(1).to_numpy())


def messy_fleet(tmp_path, devices: int = 7) -> str:
    """Three files (a glob) of a fleet with late installs, outages, repeated rows, missing codes, a stuck meter, shuffled rows."""
    frame = make_fleet(devices=devices, late={1: 100, 4: 390}, outages={2: (200, 230), 5: (50, 52)})
    frame.loc[frame.index[[10, 900]], "power"] = -9999
    frame.loc[(frame["device"] == "m3") & frame["timestamp"].between(START + pd.Timedelta("50h"), START + pd.Timedelta("70h")), "temp"] = (
        5.0
    )
    repeats = frame.iloc[[20, 21, 500, 1700]].assign(power=lambda f: f["power"] + 2)
    frame = pd.concat([frame, repeats]).sample(frac=1.0, random_state=3)
    (tmp_path / "drop").mkdir()
    for i, start in enumerate(range(0, len(frame), -(-len(frame) // 3))):
        write(frame.iloc[start : start + -(-len(frame) // 3)], tmp_path / "drop" / f"part{i}.csv")
    return str(tmp_path / "drop" / "part*.csv")


def same_fleet(a, b) -> None:
    np.testing.assert_array_equal(a.values, b.values)
    for name in ("start", "length", "first"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    pd.testing.assert_frame_equal(a.ids, b.ids)
    pd.testing.assert_frame_equal(a.report.devices, b.report.devices)
    assert (a.span, a.step, a.freq, a.tz, a.static_values) == (b.span, b.step, b.freq, b.tz, b.static_values)
    assert a.report.to_dict() == b.report.to_dict() and a.report.lines() == b.report.lines()


def streamed_only(monkeypatch) -> None:
    """From here on load_fleet has no whole-table fallback (a file the streamed path would not read fails the test), and
    handles devices in groups of a few hundred rows, so that pieces are freed or cut while the stack fills."""
    from forecast import fleet as module

    def refuse(*args):
        raise AssertionError("the streamed path fell back to the whole-table path")

    monkeypatch.setattr(module, "_whole_table", refuse)
    monkeypatch.setattr(module, "_GROUP_ROWS", 300)


@pytest.mark.parametrize("block_bytes", [1 << 10, 1 << 20])  # blocks of ~25 rows (boundaries inside every device), whole files
def test_the_streamed_path_reads_a_messy_fleet_as_the_whole_table_path(tmp_path, monkeypatch, block_bytes):
    spec = {"path": messy_fleet(tmp_path), "na_values": [-9999], "stuck_steps": 6}
    whole = load_fleet(CsvSpec(**spec), ["device"], L + H, whole=True)
    streamed_only(monkeypatch)
    streamed = load_fleet(CsvSpec(**spec), ["device"], L + H, block_bytes=block_bytes)
    same_fleet(streamed, whole)
    table = streamed.report.devices.set_index("device")
    assert table["duplicates"].sum() == 4 and streamed.report.data.missing_codes == 2 and table.loc["m3", "stuck"] > 0
    assert "m4" not in streamed.ids["device"].tolist() and table.loc["m2", "longest_gap"] >= 30 and table.loc["m5", "interpolated"] >= 4


def test_the_streamed_path_reads_two_id_columns_a_static_column_and_a_folder_as_the_whole_table_path(tmp_path, monkeypatch):
    frame = make_fleet(devices=4, late={3: 50}).sample(frac=1.0, random_state=0)
    frame["site"] = np.where(frame["device"].isin(["m0", "m1"]), "north", "south")
    frame["model"] = np.where(frame["device"].isin(["m0", "m2"]), "x1", "x2")
    frame["device"] = frame["device"].replace({"m2": "m0", "m3": "m1"})
    frame["note"] = "ok"  # text: ignored, and named in the report
    long = {"spec": CsvSpec(path=write(frame, tmp_path / "f.csv")), "id_columns": ["site", "device"], "static_columns": ["model"]}
    (tmp_path / "meters").mkdir()
    for name, rows in make_fleet(devices=3, outages={1: (10, 12)}).groupby("device"):
        write(rows.drop(columns="device"), tmp_path / "meters" / f"{name}.csv")
    folder = {"spec": CsvSpec(path=str(tmp_path / "meters")), "id_columns": ["device"]}
    wholes = [load_fleet(**case, need=L + H, whole=True) for case in (long, folder)]
    streamed_only(monkeypatch)
    for case, whole in zip((long, folder), wholes):
        same_fleet(load_fleet(**case, need=L + H, block_bytes=1 << 10), whole)
    assert wholes[0].static_values == [["x1", "x2"]] and len(wholes[0]) == 4 and wholes[0].report.data.ignored_columns == ["note"]


def test_the_generated_fleet_takes_the_streamed_path(tmp_path, monkeypatch):
    from forecast.sample_fleet import generate

    generate(12, 20, "1h", 0, output=tmp_path / "meters.csv", sites=2)
    spec = CsvSpec(path=str(tmp_path / "meters.csv"))
    whole = load_fleet(spec, ["device"], L + H, static_columns=["site"], whole=True)
    streamed_only(monkeypatch)
    streamed = load_fleet(spec, ["device"], L + H, static_columns=["site"], block_bytes=1 << 12)
    same_fleet(streamed, whole)
    assert (streamed.report.reader, whole.report.reader) == ("streamed", "whole table")


def test_shares_partition_the_devices_and_keep_the_whole_fleets_facts(tmp_path, monkeypatch):
    spec = {"path": messy_fleet(tmp_path, devices=8), "na_values": [-9999]}
    whole = load_fleet(CsvSpec(**spec), ["device"], L + H, whole=True)
    streamed_only(monkeypatch)
    shares = [load_fleet(CsvSpec(**spec), ["device"], L + H, share=(rank, 3), block_bytes=1 << 10) for rank in range(3)]
    names = [s.ids["device"].tolist() for s in shares]
    assert sorted(sum(names, [])) == sorted(whole.ids["device"]) and len(set(sum(names, []))) == len(whole)  # each device once
    order = pd.Series(range(len(whole.report.devices)), index=whole.report.devices["device"])  # numbers: order of first appearance
    for rank, share in enumerate(shares):
        assert (order[names[rank]] % 3 == rank).all()
        facts = ["device", "duplicates", "readings", "first", "last", "rows", "inserted", "status"]  # of every device, on every rank
        assert share.span == whole.span and share.report.devices[facts].equals(whole.report.devices[facts])
        assert share.report.data.rows_read == whole.report.data.rows_read and share.static_values == whole.static_values
        assert len(share.values) == share.length.sum() + len(share) + 1  # only its own devices' rows
        for d, name in enumerate(names[rank]):
            np.testing.assert_array_equal(
                share.frame(d).to_numpy(), whole.frame(int(np.flatnonzero(whole.ids["device"] == name)[0])).to_numpy()
            )


def test_devices_at_another_step_or_too_short_are_reported_and_left_out(tmp_path):
    frame = make_fleet(devices=4, late={3: 380})  # m3: 20 hours, fewer than L + H = 36
    slow = frame[frame["device"] == "m1"]
    frame = pd.concat([frame[frame["device"] != "m1"], slow[slow["timestamp"].dt.hour % 2 == 0]])  # m1 every 2 hours
    fleet = load_fleet(CsvSpec(path=write(frame, tmp_path / "f.csv")), ["device"], L + H)
    assert fleet.ids["device"].tolist() == ["m0", "m2"]
    status = fleet.report.devices.set_index("device")["status"]
    assert status["m1"] == "reads every 2h, not every 1h" and "fewer than lookback + horizon = 36" in status["m3"]
    lines = "\n".join(fleet.report.lines())
    assert "left out (reads every 2h, not every 1h): m1" in lines and "left out (fewer than lookback + horizon = 36 steps): m3" in lines


def test_duplicates_missing_codes_and_stuck_values_per_device(tmp_path):
    frame = make_fleet(devices=3)
    frame.loc[frame.index[10], "power"] = -9999
    frame.loc[(frame["device"] == "m1") & frame["timestamp"].between(START + pd.Timedelta("50h"), START + pd.Timedelta("70h")), "temp"] = (
        5.0
    )
    frame = pd.concat(
        [frame.iloc[:21], frame.iloc[[20]].assign(power=frame["power"].iloc[20] + 2), frame.iloc[21:]]
    )  # a repeated timestamp
    path = write(frame, tmp_path / "f.csv")
    fleet = load_fleet(CsvSpec(path=path, na_values=[-9999], stuck_steps=6), ["device"], L + H)
    table = fleet.report.devices.set_index("device")
    assert table.loc["m0", "duplicates"] == 1 and table.loc["m1", "stuck"] == 21 and table.loc["m0", "stuck"] == 0
    assert table.loc["m0", "readings"] == 400 and table.loc["m0", "inserted"] == 0  # readings at distinct timestamps
    assert fleet.report.data.missing_codes == 1 and table.loc["m0", "interpolated"] == 1
    assert fleet.frame(0)["power"].iloc[20] == pytest.approx(frame["power"].iloc[20] + 1, abs=1e-3)  # the mean of the two
    with pytest.raises(InputError, match=r"device 'm0': timestamp 2024-01-01 20:00:00 occurs more than once \('.*f.csv' line 22, "):
        load_fleet(CsvSpec(path=path, duplicates="error"), ["device"], L + H)


TYPO = "timestamp,device,power\n" + "".join(f"2024-01-01 0{h}:00,a,{h}\n" for h in range(5)) + "2090-01-01 05:00,a,5\n"


@pytest.mark.parametrize(
    ("content", "setting", "message"),
    [
        ("timestamp,meter,power\n2024-01-01 00:00,a,1\n", {}, r"has no id column 'device' \(columns: timestamp, meter, power\)"),
        ("timestamp,device,power\n2024-01-01 00:00,,1\n", {}, r"line 2 has a reading but no device id"),
        ("timestamp,device,power\n2024-01-01 00:00,a,x1\n2024-01-01 01:00,a,2\n", {}, r"line 2, column 'power': 'x1' is not a number"),
        ("timestamp,device,power\n2024-01-01 00:00,a,1\n2024-01-01 01:00,a,2\n", {"layout": "long"}, r"data.layout=long does not apply"),
        ("timestamp,device,power\n2024-01-01 00:00,a,1\n2024-01-01 01:00,a,2\n", {}, r"no device is left: 1 devices"),
        (TYPO, {}, r"device 'a': a grid every 1h from .* to 2090-01-01 05:00:00 \('.*f.csv' line 7\) would need"),
    ],
)
def test_bad_fleet_input_names_the_file_line_and_setting(tmp_path, content, setting, message):
    (tmp_path / "f.csv").write_text(content)
    with pytest.raises(InputError, match=message):
        load_fleet(CsvSpec(path=str(tmp_path / "f.csv"), **setting), ["device"], L + H)


def test_bad_series_column_and_cuts_settings(tmp_path):
    path = write(make_fleet(devices=2), tmp_path / "f.csv")
    with pytest.raises(InputError, match=r"data.series_column=\[\] is not a column name"):
        FleetDataModule(path, series_column=[], **SMALL)
    with pytest.raises(InputError, match=r"data.cuts=.* must be two or three increasing timestamps"):
        FleetDataModule(path, cuts=["2024-01-10", "2024-01-05"], **SMALL)
    with pytest.raises(InputError, match=r"the test span .* holds 0 window"):
        FleetDataModule(path, cuts=["2024-01-10", "2024-01-15", "2024-01-15T05:00"], **SMALL)


@pytest.mark.e2e
def test_bad_fleet_input_exits_2_with_one_line(tmp_path):
    write(make_fleet(devices=2), tmp_path / "f.csv")
    done = run_cli("forecast.train", "data=fleet", "data.path=f.csv", "data.series_column=meter", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("error:"))  # Lightning's device lines may come first
    assert lines[at].startswith("error: 'f.csv' has no id column 'meter'") and lines[at + 1 :] == [
        "Set data.series_column to its id column(s)."
    ]


# --- windows and scaling ------------------------------------------------------------------------


def test_one_cut_in_time_and_an_outage_in_one_device_keeps_the_others_windows(tmp_path):
    clean = FleetDataModule(write(make_fleet(), tmp_path / "a.csv"), **SMALL)
    gappy = FleetDataModule(write(make_fleet(late={1: 100}, outages={2: (300, 340)}), tmp_path / "b.csv"), **SMALL)
    assert clean.spans == gappy.spans  # cut at the same timestamps, fractions of the fleet's time range
    for split in ("train", "val", "test"):
        before, after = windows_of(clean, split), windows_of(gappy, split)
        assert (after.drop(["m1", "m2"]) == before.drop(["m1", "m2"])).all()  # untouched devices keep every window
        assert after["m2"] < before["m2"] or split == "train"
    ds = gappy.datasets["test"]
    for o in ds.origins:  # every test target lies after the cut, on one device
        d = int(ds.series_of(torch.tensor([o]))[0])
        stamp = gappy.fleet.first[d] + (o - gappy.fleet.start[d]) * gappy.fleet.step
        assert stamp >= gappy.spans["test"][0] and o - L >= gappy.fleet.start[d]


def test_scaling_is_per_device_and_per_reading_on_its_training_span(tmp_path):
    frame = make_fleet(late={4: 300})  # m4 installed after the training cut
    data = FleetDataModule(write(frame, tmp_path / "f.csv"), **SMALL)
    train_end = pd.Timestamp(data.spans["train"][1])
    for name in ("m0", "m3"):
        d = device(data, name)
        raw = frame[(frame["device"] == name) & (frame["timestamp"] < train_end)][["power", "temp"]]
        np.testing.assert_allclose(data.mean[d], raw.mean(), rtol=1e-6)
        np.testing.assert_allclose(data.std[d], raw.std(ddof=0), rtol=1e-5)
        rows = data.fleet.values[data.fleet.start[d] : data.fleet.start[d] + len(raw)]
        np.testing.assert_allclose(rows.mean(axis=0), 0, atol=1e-4)
    d = device(data, "m4")  # cold-start scaling: its first lookback readings
    first = frame[frame["device"] == "m4"][["power", "temp"]].iloc[:L]
    np.testing.assert_allclose(data.mean[d], first.mean(), rtol=1e-6)
    assert data.mean[device(data, "m0"), 0] < data.mean[device(data, "m3"), 0] / 3  # devices at different levels


def test_a_gap_in_one_sensor_keeps_the_other_sensors_windows(tmp_path):
    frame = make_fleet(devices=2)
    frame.loc[
        (frame["device"] == "m0") & frame["timestamp"].between(START + pd.Timedelta("100h"), START + pd.Timedelta("129h")), "temp"
    ] = np.nan
    path = write(frame, tmp_path / "f.csv")
    independent = FleetDataModule(path, **SMALL)
    mixing = FleetDataModule(path, channel_independent=False, **SMALL)
    clean = FleetDataModule(write(make_fleet(devices=2), tmp_path / "c.csv"), **SMALL)
    assert windows_of(independent, "train")["m0"] == windows_of(clean, "train")["m0"]  # power still has every window
    assert windows_of(mixing, "train")["m0"] == windows_of(clean, "train")["m0"] - (30 + L + H - 1)
    ds = independent.datasets["train"]
    row = independent.fleet.start[0] + 110
    (i,) = np.flatnonzero(ds.origins == row)
    x, y, series = ds.__getitems__([int(i)])
    assert (x[0, :, 1] == 0).all() and torch.isnan(y[0, :, 1]).all()  # temp masked: input 0, no target
    assert torch.isfinite(x[0, :, 0]).all() and torch.isfinite(y[0, :, 0]).all() and series.tolist() == [0]


def test_masking_a_channel_is_exact_under_channel_independence():
    torch.manual_seed(0)
    net = RecurrentNet(n_inputs=3, target_index=[0, 1], lookback=L, horizon=H, hidden_size=16, segment_len=6).eval()
    x = torch.randn(4, L, 3)
    filled = x.clone()
    filled[:, :, 1] = 0.0  # channel 1 masked as the fleet windows mask it
    torch.testing.assert_close(net(x)[..., 0], net(filled)[..., 0], rtol=0, atol=0)
    mixing = RecurrentNet(n_inputs=3, target_index=[0, 1], lookback=L, horizon=H, hidden_size=16, segment_len=6, channel_independent=False)
    assert not torch.equal(mixing.eval()(x)[..., 0], mixing(filled)[..., 0])  # why mixing networks need every channel


def test_the_loss_leaves_masked_cells_out():
    module = ForecastModule(lookback=L, horizon=H, n_inputs=2, target_index=[0, 1], loss="mse", hidden_size=8, segment_len=6, dropout=0.0)
    x, y = torch.randn(8, L, 2), torch.randn(8, H, 2)
    pred = module(x)
    masked = y.clone()
    masked[:3, :, 1] = float("nan")
    loss = module.training_step((x, masked, torch.zeros(8, dtype=torch.long)), 0)
    valid = ~torch.isnan(masked)
    assert torch.isclose(loss, ((pred - y)[valid] ** 2).mean(), atol=1e-6)


# --- cold start and the device embedding ---------------------------------------------------------


def _forecaster(net, data) -> Forecaster:
    return Forecaster(
        net,
        data.scaler,
        data.inputs,
        data.targets,
        "1h",
        {},
        series_columns=data.series_columns,
        series_ids=list(data.fleet.ids.itertuples(index=False, name=None)),
        series_mean=data.mean,
        series_std=data.std,
    )


def test_an_unseen_device_is_forecast_from_its_own_readings(tmp_path):
    data = FleetDataModule(write(make_fleet(devices=3), tmp_path / "f.csv"), **SMALL)
    torch.manual_seed(0)
    forecaster = _forecaster(RecurrentNet(2, [0, 1], L, H, hidden_size=8, segment_len=6), data)
    history = make_fleet(devices=7, seed=3).query("device == 'm6'")[["power", "temp"]].to_numpy()  # a new meter, 7x m0's level
    index = forecaster.series_index([("m6",), ("m1",)])
    assert index.tolist() == [-1, 1]
    scaler = forecaster.series_scaler(index, [history, history])
    np.testing.assert_allclose(scaler.mean[0, 0], history.mean(axis=0))  # cold start: its own readings
    np.testing.assert_allclose(scaler.mean[1, 0], data.mean[1])  # a seen device: its training scaler
    windows = np.stack([history[-L:], history[-L:]])
    pred = forecaster.forecast(windows, scaler=scaler, series=index)
    assert pred.shape == (2, H, 2) and np.isfinite(pred).all()
    assert abs(pred[0, :, 0].mean() - history[-L:, 0].mean()) < 3 * history[:, 0].std()  # at its own level, not a seen meter's
    # no per-device parameters: the unseen device's forecast is what the same readings give any device with that scaler
    np.testing.assert_allclose(pred[0], forecaster.forecast(windows[:1], scaler=Scaler(scaler.mean[:1], scaler.std[:1]))[0])


def test_the_device_embedding_gives_unseen_devices_the_mean_vector():
    torch.manual_seed(0)
    net = RecurrentNet(2, [0, 1], L, H, hidden_size=8, segment_len=6, series_embedding=True, n_series=3).eval()
    x = torch.randn(1, L, 2).expand(3, L, 2)
    out = net(x, torch.tensor([0, 1, -1]))
    assert not torch.equal(out[0], out[1])  # seen devices differ by their vectors
    with torch.no_grad():
        net.series.weight.copy_(net.series.weight.mean(dim=0).expand(3, -1))
    torch.testing.assert_close(net(x[:1], torch.tensor([0])), out[2:])  # unseen = the mean vector
    torch.testing.assert_close(net(x[:1]), out[2:])  # no device given = unseen


def test_split_forecasts_carry_each_windows_device_and_scaler(tmp_path):
    data = FleetDataModule(write(make_fleet(devices=3), tmp_path / "f.csv"), **SMALL)
    torch.manual_seed(0)
    test = forecast_split(_forecaster(RecurrentNet(2, [0, 1], L, H, hidden_size=8, segment_len=6), data), data)
    assert test.pred.shape == test.actual.shape == (len(data.datasets["test"]), H, 2) and test.std.shape == (len(test.pred), 1, 2)
    np.testing.assert_allclose(test.std[test.series == 2][0, 0], data.std[2])
    window = data.fleet.frame(1).to_numpy()  # device 1's rows, standardised in place by the data module
    first = int(np.flatnonzero(test.series == 1)[0])
    row = test.origins[first] - data.fleet.start[1]
    np.testing.assert_allclose(test.actual[first], window[row : row + H] * data.std[1] + data.mean[1], rtol=1e-5)


def test_the_bundle_carries_the_fleet(tmp_path):
    data = FleetDataModule(write(make_fleet(devices=3), tmp_path / "f.csv"), **SMALL)
    args = {"network": "recurrent", "n_inputs": 2, "target_index": [0, 1], "lookback": L, "horizon": H, "hidden_size": 8, "segment_len": 6}
    forecaster = _forecaster(RecurrentNet(**{k: v for k, v in args.items() if k != "network"}), data)
    forecaster.net_args = args
    loaded = Forecaster.load(forecaster.save(tmp_path / "model.pt"))
    assert loaded.series_columns == ["device"] and loaded.series_ids == [("m0",), ("m1",), ("m2",)]
    np.testing.assert_allclose(loaded.series_std, data.std)


# --- training and per-device evaluation ----------------------------------------------------------


def test_training_scores_every_device(tmp_path):
    write(make_fleet(devices=4, hours=300, late={3: 120}, outages={1: (150, 200)}), tmp_path / "f.csv")
    overrides = ["data=fleet", f"data.path={tmp_path / 'f.csv'}", "data.lookback=24", "data.horizon=12", "model.hidden_size=8"]
    overrides += ["model.segment_len=6", "trainer.max_epochs=1", "trainer.accelerator=cpu"]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    cwd, uri = os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.chdir(tmp_path)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/mlflow.db"
    try:
        training.train(cfg, tmp_path / "outputs", "test")
    finally:
        os.chdir(cwd)
        os.environ.pop("MLFLOW_TRACKING_URI") if uri is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("forecast").experiment_id])
    metrics = run.data.metrics
    assert run.info.status == "FINISHED" and all(np.isfinite(v) for v in metrics.values())
    for name in ("test/mse_scaled", "test/mae_scaled", "test/mae", "test/rmse", "baseline/mse_scaled"):
        assert name in metrics
    assert metrics["test/series_mse_scaled_p50"] <= metrics["test/series_mse_scaled_p90"]
    table = pd.read_parquet(client.download_artifacts(run.info.run_id, "evaluation/test_by_series.parquet", str(tmp_path)))
    assert list(table.columns[:6]) == ["device", "windows", "mae", "rmse", "mse_scaled", "mae_scaled"]
    assert sorted(table["device"]) == ["m0", "m1", "m2", "m3"] and (table["windows"] == 60 - H + 1).all()  # the same test span
    np.testing.assert_allclose(np.percentile(table["mse_scaled"], 50), metrics["test/series_mse_scaled_p50"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/worst_series.png" in artifacts
    windows = pd.read_parquet(client.download_artifacts(run.info.run_id, "evaluation/test_by_window.parquet", str(tmp_path)))
    assert windows["origin"].is_unique and list(windows.columns[:3]) == ["origin", "timestamp", "series"]  # pairs windows across runs


def test_quantiles_with_a_fleet_are_refused_before_any_run(tmp_path):
    write(make_fleet(devices=2), tmp_path / "f.csv")
    overrides = ["data=fleet", f"data.path={tmp_path / 'f.csv'}", "data.lookback=24", "data.horizon=12", "model.segment_len=6"]
    overrides += ["model.quantiles=[0.1,0.9]"]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(InputError, match=r"with a fleet \(data.series_column\): quantile forecasts are not calibrated per device yet"):
            training.train(cfg, tmp_path / "outputs", "test")
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "mlflow.db").exists()  # refused before any run or store exists
