"""A fleet tested in shares (trainer=ddp): the processes' parts combine into what one process holding every device computes.

In-process, no process group: the same small fleet is built whole and as two shares (the data modules
of rank 0 and 1 of 2), each share is tested on its own (`score_part`) and the parts are combined
(`combine`), as rank zero does with what it gathers. Devices are compared by id, windows by device
and timestamp, so the checks hold whichever devices each share holds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_fleet import make_fleet, write

from forecast.errors import JobFailed
from forecast.fleet_datamodule import FleetDataModule
from forecast.fleet_evaluate import _MAX_WINDOW_ROWS, FleetPart, combine, fleet_test, score_part
from forecast.forecaster import Forecaster
from forecast.recurrent import RecurrentNet

L, H = 24, 12
SITES = {"m0": "north", "m1": "south", "m2": "north", "m3": "east", "m4": "east"}


@pytest.fixture(scope="module")
def tested(tmp_path_factory):
    """(whole, combined, whole data module): the fleet's test from one process, and from two shares combined."""
    frame = make_fleet(devices=5, hours=300, late={3: 120}, outages={1: (150, 200), 4: (260, 275)})
    path = write(frame.assign(site=frame["device"].map(SITES)), tmp_path_factory.mktemp("ddp") / "f.csv")
    settings = {"lookback": L, "horizon": H, "static_columns": ["site"], "calendar": ["hour"]}
    whole = FleetDataModule(path, **settings)
    shares = [FleetDataModule(path, rank=r, world_size=2, **settings) for r in (0, 1)]
    torch.manual_seed(0)
    net = RecurrentNet(2, [0, 1], L, H, hidden_size=8, segment_len=6, calendar=["hour"], step=int(whole.fleet.step), static_sizes=[3])
    net.eval()

    def forecaster(data) -> Forecaster:
        return Forecaster(
            net, data.scaler, data.inputs, data.targets, "1h", {}, series_columns=data.series_columns,
            static_columns=["site"], static_values=list(data.static_values),
        )  # fmt: skip

    assert sorted(len(s.fleet) for s in shares) == [2, 3]  # each process holds only its share
    assert sorted(d for s in shares for d in s.fleet.ids["device"]) == sorted(whole.fleet.ids["device"])  # each device on one
    one = combine([score_part(forecaster(whole), whole)])
    assert fleet_test(forecaster(whole), whole).metrics == one.metrics  # no process group: this process's part alone
    return one, combine([score_part(forecaster(s), s) for s in shares]), whole


def by_device(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("device").sort_index()


def test_the_aggregate_metrics_of_the_shares_are_the_whole_fleets(tested):
    whole, combined, _ = tested
    assert combined.metrics.keys() == whole.metrics.keys() and "test/series_mse_scaled_p90" in whole.metrics
    for key, value in whole.metrics.items():
        assert np.isfinite(value) and combined.metrics[key] == pytest.approx(value, rel=1e-9), key
    pd.testing.assert_frame_equal(combined.by_step, whole.by_step, rtol=1e-9)
    assert combined.windows == whole.windows


def test_every_device_has_its_row_scaler_and_ingestion_row(tested):
    whole, combined, data = tested
    pd.testing.assert_frame_equal(by_device(combined.by_series), by_device(whole.by_series), rtol=1e-9)
    assert len(combined.by_series) == 5 and sorted(combined.ids["device"]) == sorted(data.fleet.ids["device"])
    at = pd.Index(combined.ids["device"]).get_indexer(data.fleet.ids["device"])  # combined number of each device of the whole
    np.testing.assert_array_equal(combined.mean[at], data.mean)
    np.testing.assert_array_equal(combined.std[at], data.std)
    assert combined.report.to_dict() == whole.report.to_dict()  # cleaning counts of every device, not only rank zero's
    pd.testing.assert_frame_equal(
        by_device(combined.report.devices), by_device(whole.report.devices), check_dtype=False, check_index_type=False
    )
    forecaster = Forecaster(torch.nn.Identity(), None, data.inputs, data.targets, "1h", {})
    combined.describe(forecaster)
    assert [key[0] for key in forecaster.series_ids] == list(combined.ids["device"])
    np.testing.assert_allclose(forecaster.scaler.mean, np.median(data.mean, axis=0))  # the whole fleet's median


def test_every_window_once_with_its_own_row_of_the_fleet(tested):
    whole, combined, _ = tested

    def keyed(test) -> pd.DataFrame:
        frame = test.by_window.assign(device=test.ids["device"].to_numpy()[test.by_window["series"]])
        return frame.drop(columns=["origin", "series"]).set_index(["device", "timestamp"]).sort_index()

    assert combined.by_window["origin"].is_unique and combined.by_window["origin"].is_monotonic_increasing
    pd.testing.assert_frame_equal(keyed(combined), keyed(whole), rtol=1e-6)
    step = combined.by_window.groupby("series")["origin"].diff().dropna()
    assert (step >= 1).all() and len(combined.by_window) == whole.windows["test"]


def test_the_worst_devices_and_the_examples_come_from_the_share_that_holds_them(tested):
    whole, combined, data = tested
    names = lambda test: [test.ids["device"].iloc[w[0]] for w in test.worst]  # noqa: E731
    assert names(combined) == names(whole) and len(combined.worst) == 5  # every device, worst first
    for (_, *a), (_, *b) in zip(combined.worst, whole.worst):
        for x, y in zip(a, b):
            np.testing.assert_allclose(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    last = [d for d in combined.ids["device"] if d in set(combined.by_series["device"])][-2:]  # the last two devices with windows
    example = combined.example_input
    assert list(example.columns[:3]) == ["device", "site", "timestamp"] and list(pd.unique(example["device"])) == last
    for name, part in example.groupby("device"):
        d = int(np.flatnonzero(data.fleet.ids["device"] == name)[0])
        readings = data.fleet.frame(d).loc[part["timestamp"]].to_numpy() * data.std[d] + data.mean[d]  # the device's own readings
        np.testing.assert_allclose(part[data.inputs].to_numpy(), readings, rtol=1e-5)
        assert (part["site"] == SITES[name]).all()
    window = combined.example_window
    assert window["device"].iloc[0] == last[-1] and len(window) == L + H and window["power:forecast"].iloc[L:].notna().all()


def test_a_test_span_of_too_many_windows_gathers_no_window_table(tested, monkeypatch):
    _, combined, data = tested
    assert len(combined.by_window) <= _MAX_WINDOW_ROWS
    monkeypatch.setattr("forecast.fleet_evaluate._MAX_WINDOW_ROWS", 10)
    net = RecurrentNet(2, [0, 1], L, H, hidden_size=8, segment_len=6, calendar=["hour"], step=int(data.fleet.step), static_sizes=[3])
    forecaster = Forecaster(net.eval(), data.scaler, data.inputs, data.targets, "1h", {}, static_columns=["site"])
    forecaster.static_values = list(data.static_values)
    test = fleet_test(forecaster, data)
    assert test.by_window is None and len(test.by_series) == 5 and np.isfinite(list(test.metrics.values())).all()


def test_a_process_that_fails_its_part_fails_rank_zero_instead_of_leaving_it_waiting(tested, monkeypatch):
    _, _, data = tested
    net = RecurrentNet(2, [0, 1], L, H, hidden_size=8, segment_len=6, calendar=["hour"], step=int(data.fleet.step), static_sizes=[3])
    forecaster = Forecaster(net.eval(), data.scaler, data.inputs, data.targets, "1h", {}, static_columns=["site"])
    forecaster.static_values = list(data.static_values)
    sent = []
    monkeypatch.setattr("forecast.fleet_share.gather", lambda part: sent.append(part) or [part, "MemoryError: rank 1's windows"])
    with pytest.raises(JobFailed, match="rank 1: MemoryError: rank 1's windows"):
        fleet_test(forecaster, data)  # rank zero: its own part and rank 1's failure
    monkeypatch.setattr("forecast.fleet_evaluate.score_part", lambda *args: np.zeros(2)[5])  # this process fails its own part
    with pytest.raises(IndexError):
        fleet_test(forecaster, data)
    assert isinstance(sent[0], FleetPart) and sent[1].startswith("IndexError: index 5")  # the failure was still sent
