"""Fleets outside training: the generated fleet, predict and serving for many devices, retrain and compare per device."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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
