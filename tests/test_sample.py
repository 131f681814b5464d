"""The embedded sample data set: reproducible from its generator, small, and carrying its faults."""

from pathlib import Path

import pandas as pd
import pytest

from forecast.sample import SENSORS, main

DATA = Path(__file__).parents[1] / "data" / "sensors.csv"


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    """Every cell as the string in the file, empty cells kept as ""."""
    return pd.read_csv(DATA, dtype=str, keep_default_na=False)


def _runs(column: pd.Series) -> pd.Series:
    """Lengths of the runs of identical consecutive cells."""
    return column.groupby((column != column.shift()).cumsum()).size()


def test_regenerating_with_defaults_is_byte_identical(tmp_path):
    out = tmp_path / "sensors.csv"
    main(["--out", str(out)])
    assert out.read_bytes() == DATA.read_bytes()


def test_file_is_small():
    assert DATA.stat().st_size <= 1_000_000


def test_columns_and_timestamps(raw):
    assert list(raw.columns) == ["timestamp", *SENSORS]
    ts = pd.to_datetime(raw["timestamp"], format="%Y-%m-%d %H:%M:%S")
    assert ts.iloc[0] == pd.Timestamp("2025-01-06 00:00:00")
    assert ts.is_monotonic_increasing


def test_scattered_missing_cells(raw):
    cells = raw[SENSORS]
    empty, coded = (cells == "").to_numpy().mean(), (cells == "-9999").to_numpy().mean()
    assert 0.002 < empty < 0.01
    assert 0.0003 < coded < 0.003
    values = pd.read_csv(DATA, na_values=["", "-9999"])[SENSORS]
    assert values.isna().to_numpy().mean() == pytest.approx(empty + coded)


def test_one_outage_of_a_few_hours(raw):
    steps = pd.to_datetime(raw["timestamp"]).drop_duplicates().diff().dropna()
    gaps = steps[steps > pd.Timedelta("30min")]
    assert len(gaps) == 1
    assert pd.Timedelta("3h") <= gaps.iloc[0] <= pd.Timedelta("8h")


def test_exactly_one_duplicated_timestamp(raw):
    dup = raw[raw["timestamp"].duplicated(keep=False)]
    assert len(dup) == 2
    assert not dup.iloc[0].equals(dup.iloc[1])  # the repeat carries slightly different values


def test_one_stuck_humidity_stretch_and_no_other_long_runs(raw):
    humidity = _runs(raw["humidity_pct"])
    assert (humidity >= 24).sum() == 1
    start = raw.index[(raw["humidity_pct"] != raw["humidity_pct"].shift()).cumsum() == humidity.idxmax()][0]
    assert start < 0.6 * len(raw)
    assert sorted(humidity)[-2] <= 6
    for col in SENSORS:
        if col != "humidity_pct":
            assert _runs(raw[col]).max() <= 6, col
