"""Tests of the frame stage: CSV export(s) -> regular, validated DataFrame + DataReport."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from forecast.errors import InputError
from forecast.frame import CsvSpec, load_frame


def write(directory, text: str, name: str = "data.csv") -> str:
    path = directory / name
    path.write_text(text)
    return str(path)


def table(start: str = "2024-01-01 00:00", freq: str = "10min", **columns) -> str:
    """A wide CSV: a timestamp column, then the given columns (None -> empty field)."""
    rows = len(next(iter(columns.values())))
    stamps = pd.date_range(start, periods=rows, freq=freq).strftime("%Y-%m-%d %H:%M:%S")
    lines = [",".join(["timestamp", *columns])]
    for i, stamp in enumerate(stamps):
        lines.append(",".join([stamp, *("" if values[i] is None else str(values[i]) for values in columns.values())]))
    return "\n".join(lines) + "\n"


def load(path: str, **settings):
    return load_frame(CsvSpec(path=path, **settings))


# --- reading -------------------------------------------------------------------------------------


def test_wide_file(tmp_path):
    path = write(tmp_path, table(a=[1, 2, 3, 4], b=[0.5, 0.25, 0, -1]))
    frame, report = load(path)
    assert list(frame.columns) == ["a", "b"]
    assert (frame.dtypes == "float64").all()
    assert frame.index.name == "timestamp" and frame.index.freqstr == "10min"
    assert frame.index[0] == pd.Timestamp("2024-01-01 00:00")
    assert frame["b"].tolist() == [0.5, 0.25, 0, -1]
    assert (report.rows_read, report.rows, report.freq) == (4, 4, "10min")
    assert report.lines()[0].startswith(f"read 4 rows from {path}")


def test_long_layout_is_pivoted(tmp_path):
    path = write(
        tmp_path,
        "time,sensor,value\n"
        "2024-01-01 00:00,t1,1\n2024-01-01 00:00,t2,10\n2024-01-01 01:00,t2,20\n"
        "2024-01-01 01:00,t1,2\n2024-01-01 02:00,t1,3\n2024-01-01 02:00,t2,30\n",
    )
    frame, report = load(path, layout="long")
    assert list(frame.columns) == ["t1", "t2"]
    assert frame["t1"].tolist() == [1, 2, 3] and frame["t2"].tolist() == [10, 20, 30]
    assert report.freq == "1h" and report.duplicates == 0


def test_long_layout_duplicates_apply_per_sensor(tmp_path):
    path = write(
        tmp_path,
        "ts,id,reading\n2024-01-01 00:00,7,1\n2024-01-01 00:00,7,3\n2024-01-01 00:00,8,5\n2024-01-01 01:00,7,4\n2024-01-01 01:00,8,6\n",
    )
    frame, report = load(path, layout="long", sensor_column="id", value_column="reading", targets=["7", "8"])
    assert frame["7"].tolist() == [2, 4] and frame["8"].tolist() == [5, 6]
    assert report.duplicates == 1


def test_date_and_time_columns(tmp_path):
    path = write(tmp_path, "Date,Time,x\n13/03/2024,23:00,1\n13/03/2024,23:30,2\n14/03/2024,00:00,3\n")
    frame, _ = load(path, date_column="Date", time_column="Time", time_format="%d/%m/%Y %H:%M")
    assert frame.index.tolist() == list(pd.date_range("2024-03-13 23:00", periods=3, freq="30min"))
    assert frame["x"].tolist() == [1, 2, 3]


def test_time_format_wins_over_iso_parsing(tmp_path):
    path = write(tmp_path, "timestamp,a\n2024-02-03 00:00,1\n2024-02-03 01:00,2\n")
    frame, _ = load(path, time_format="%Y-%d-%m %H:%M")
    assert frame.index[0] == pd.Timestamp("2024-03-02 00:00")


def test_separate_date_and_time_columns_are_detected(tmp_path):
    path = write(tmp_path, "date,time,x\n2024-03-13,23:00,1\n2024-03-13,23:30,2\n2024-03-14,00:00,3\n")
    frame, report = load(path)
    assert frame.index[-1] == pd.Timestamp("2024-03-14 00:00") and report.targets == ["x"]


def test_semicolon_separator_decimal_comma_and_empty_trailer(tmp_path):
    # shaped like the UCI air-quality export: ';' and ',' decimals, -200 codes, empty columns and rows
    path = write(
        tmp_path,
        "Date;Time;CO(GT);T;;\n10/03/2004;18.00.00;2,6;13,6;;\n10/03/2004;19.00.00;2;-200;;\n10/03/2004;20.00.00;2,2;11,9;;\n;;;;;\n",
    )
    frame, report = load(path, sep=";", decimal=",", na_values=[-200], time_format="%d/%m/%Y %H.%M.%S")
    assert frame["CO(GT)"].tolist() == pytest.approx([2.6, 2.0, 2.2])
    assert frame["T"].tolist() == pytest.approx([13.6, 12.75, 11.9])
    assert report.ignored_columns == ["Unnamed: 4", "Unnamed: 5"]
    assert report.rows_dropped == {"empty rows": 1}
    assert (report.missing_codes, report.values_interpolated) == (1, 1)


def test_missing_codes_numeric_and_text(tmp_path):
    path = write(tmp_path, table(a=[1, -200, 3, "-200.0", 5, 6], b=[1, 2, "NA", 4, "n/a", 6]))
    frame, report = load(path, na_values=[-200, "n/a"])
    assert frame["a"].tolist() == [1, 2, 3, 4, 5, 6]
    assert frame["b"].tolist() == [1, 2, 3, 4, 5, 6]
    assert report.missing_codes == 2  # numeric codes; text codes are dropped by the reader
    assert report.missing_values == 4 and report.values_interpolated == 4


@pytest.mark.parametrize(("policy", "expected"), [("mean", 2.0), ("first", 1.0), ("last", 3.0)])
def test_duplicate_timestamps(tmp_path, policy, expected):
    path = write(tmp_path, "timestamp,a\n2024-01-01 00:00,0\n2024-01-01 01:00,1\n2024-01-01 01:00,3\n2024-01-01 02:00,4\n")
    frame, report = load(path, duplicates=policy)
    assert frame["a"].tolist() == [0, expected, 4]
    assert report.duplicates == 1 and f"1 duplicate timestamp (kept {policy})" in report.lines()[0]


def test_unsorted_rows_are_sorted(tmp_path):
    path = write(tmp_path, "timestamp,a\n2024-01-01 02:00,2\n2024-01-01 00:00,0\n2024-01-01 01:00,1\n")
    frame, _ = load(path)
    assert frame["a"].tolist() == [0, 1, 2] and frame.index.is_monotonic_increasing


# --- gaps, stuck values, resampling --------------------------------------------------------------


def test_gap_of_two_steps_is_interpolated_exactly(tmp_path):
    path = write(tmp_path, table(a=[1, 2, None, None, 8, 9], b=[0, 0, 0, 0, 0, 0]))
    frame, report = load(path, max_gap=2)
    assert frame["a"].tolist() == [1, 2, 4, 6, 8, 9]
    assert (report.values_interpolated, report.values_masked, report.missing_values) == (2, 0, 2)


def test_missing_rows_become_inserted_steps(tmp_path):
    path = write(tmp_path, "timestamp,a\n2024-01-01 00:00,0\n2024-01-01 00:10,1\n2024-01-01 00:40,4\n")
    frame, report = load(path)
    assert frame["a"].tolist() == [0, 1, 2, 3, 4]
    assert report.steps_inserted == 2 and report.values_interpolated == 2


def test_gap_longer_than_max_gap_stays_masked(tmp_path):
    path = write(tmp_path, table(a=[1, None, None, None, None, 6, 7], b=[1, 2, 3, 4, 5, 6, 7]))
    frame, report = load(path, max_gap=3)
    assert frame["a"].isna().tolist() == [False, True, True, True, True, False, False]
    assert frame["b"].notna().all()
    assert report.values_masked == 4 and report.values_interpolated == 0
    assert report.longest_gap == {"steps": 4, "column": "a", "start": "2024-01-01 00:10:00"}


def test_incomplete_rows_at_the_edges_are_dropped(tmp_path):
    path = write(tmp_path, table(a=[None, 1, 2, 3, 4], b=[1, 2, 3, 4, None]))
    frame, report = load(path)
    assert frame["a"].tolist() == [1, 2, 3] and frame.index.freqstr == "10min"
    assert report.rows_dropped == {"incomplete rows at the edges": 2} and report.rows == 3


def test_stuck_sensor_values_are_treated_as_missing(tmp_path):
    path = write(tmp_path, table(a=[1, 5, 5, 5, 5, 2, 3, 3, 3, 4]))
    frame, report = load(path, stuck_steps=3, max_gap=4)
    assert report.stuck_values == 4  # the run of four 5s; three 3s are not more than 3
    assert frame["a"].tolist() == pytest.approx([1, 1.2, 1.4, 1.6, 1.8, 2, 3, 3, 3, 4])


@pytest.mark.parametrize(("aggregation", "expected"), [("mean", [2, 5, 7]), ("sum", [6, 15, 7])])
def test_resampling_ten_minute_readings_to_thirty_minutes(tmp_path, aggregation, expected):
    path = write(tmp_path, table(a=[1, 2, 3, 4, 5, 6, 7]))
    frame, report = load(path, freq="30min", aggregation=aggregation)
    assert frame.index.freqstr == "30min" and frame["a"].tolist() == expected
    assert report.freq == "30min" and report.steps_inserted == 0


def test_empty_step_is_missing_not_zero_when_summing(tmp_path):
    path = write(tmp_path, "timestamp,a\n2024-01-01 00:00,1\n2024-01-01 00:10,2\n2024-01-01 01:00,3\n2024-01-01 01:10,4\n")
    frame, report = load(path, freq="30min", aggregation="sum")
    assert frame["a"].tolist() == [3, 5, 7] and report.steps_inserted == 1


def test_inferred_freq_is_the_most_common_step(tmp_path):
    path = write(tmp_path, "timestamp,a\n2024-01-01 00:00,0\n2024-01-01 01:00,1\n2024-01-01 03:00,3\n2024-01-01 04:00,4\n")
    frame, report = load(path)
    assert report.freq == "1h" and frame.index.freqstr == "h" and len(frame) == 5


def test_inferred_grid_runs_through_the_first_reading(tmp_path):
    path = write(tmp_path, table("2024-01-01 00:05", a=[1, 2, 3]))
    frame, _ = load(path)
    assert frame.index[0] == pd.Timestamp("2024-01-01 00:05") and frame["a"].tolist() == [1, 2, 3]


# --- several files, time zones, columns ----------------------------------------------------------


def test_folder_of_two_drops_is_one_series(tmp_path):
    (tmp_path / "drops").mkdir()
    write(tmp_path / "drops", table("2024-01-01 00:30", a=[3, 4, 5]), "2024-02.csv")
    write(tmp_path / "drops", table("2024-01-01 00:00", a=[0, 1, 2, 7]), "2024-01.csv")
    (tmp_path / "drops" / "notes.txt").write_text("not data")
    frame, report = load(str(tmp_path / "drops"), overlap="mean")
    assert frame["a"].tolist() == [0, 1, 2, 5, 4, 5]  # 00:30 in both drops -> mean of 7 and 3
    assert [p.rsplit("/", 1)[1] for p in report.files] == ["2024-01.csv", "2024-02.csv"]
    assert report.rows_read == 7 and (report.duplicates, report.overlaps, report.overlap_conflicts) == (0, 1, 1)
    assert "1 timestamp in more than one file (1 differing, kept mean)" in report.lines()[0]


@pytest.mark.parametrize(("policy", "expected"), [("first", 7.0), ("last", 3.0)])
def test_overlap_policy_first_and_last_follow_name_order(tmp_path, policy, expected):
    write(tmp_path, table("2024-01-01 00:30", a=[3, 4, 5]), "2024-02.csv")
    write(tmp_path, table("2024-01-01 00:00", a=[0, 1, 2, 7]), "2024-01.csv")
    frame, _ = load(str(tmp_path), overlap=policy)
    assert frame["a"].tolist() == [0, 1, 2, expected, 4, 5]


def test_disagreeing_drops_are_an_error_naming_both_files_and_the_first_timestamp(tmp_path):
    first = write(tmp_path, table("2024-01-01 00:00", a=[0, 1, 2, 7, 8], b=[1, 1, 1, 1, 1]), "2024-01.csv")
    second = write(tmp_path, table("2024-01-01 00:20", a=[2, 3, 9], b=[1, 1, 1]), "2024-02.csv")
    with pytest.raises(
        InputError,
        match=rf"'{re.escape(first)}' line 5 and '{re.escape(second)}' line 3 disagree at "
        r"2024-01-01 00:30:00 \(column 'a': 7 vs 3; 2 timestamps with differing readings\).*\n.*data\.overlap",
    ):
        load(str(tmp_path))


def test_identical_overlap_within_file_duplicates_keep_their_policy(tmp_path):
    write(tmp_path, table("2024-01-01 00:00", a=[0, 1, 2]), "1.csv")
    write(tmp_path, "timestamp,a\n2024-01-01 00:20:00,2\n2024-01-01 00:30:00,3\n2024-01-01 00:30:00,5\n", "2.csv")
    frame, report = load(str(tmp_path))
    assert frame["a"].tolist() == [0, 1, 2, 4] and (report.duplicates, report.overlaps, report.overlap_conflicts) == (1, 1, 0)
    assert "1 timestamp in more than one file (identical)" in report.lines()[0]


def test_long_layout_overlap_is_per_sensor(tmp_path):
    write(tmp_path, "timestamp,sensor,value\n2024-01-01 00:00,a,1\n2024-01-01 00:00,b,2\n2024-01-01 01:00,a,3\n", "1.csv")
    second = write(
        tmp_path,
        "timestamp,sensor,value\n2024-01-01 01:00,a,3\n2024-01-01 01:00,b,4\n"
        "2024-01-01 02:00,a,5\n2024-01-01 02:00,b,6\n2024-01-01 00:00,b,2.5\n",
        "2.csv",
    )
    with pytest.raises(InputError, match=rf"1.csv' line 3 and '{re.escape(second)}' line 6 disagree at 2024-01-01 00:00:00 \(sensor 'b'"):
        load(str(tmp_path), layout="long")
    frame, report = load(str(tmp_path), layout="long", overlap="last")
    assert frame["b"].tolist() == [2.5, 4, 6] and report.overlaps == 2


def test_glob(tmp_path):
    write(tmp_path, table("2024-01-01 00:00", a=[0, 1]), "site_a.csv")
    write(tmp_path, table("2024-01-01 00:20", a=[2, 3]), "site_b.csv")
    write(tmp_path, table("2024-01-01 00:00", a=[9, 9]), "other.csv")
    frame, report = load(str(tmp_path / "site_*.csv"))
    assert frame["a"].tolist() == [0, 1, 2, 3] and len(report.files) == 2


def test_timezone_localises_naive_and_converts_aware_stamps(tmp_path):
    naive = write(tmp_path, table(a=[1, 2, 3]), "naive.csv")
    frame, _ = load(naive, timezone="Europe/Berlin")
    assert str(frame.index.tz) == "Europe/Berlin" and frame.index[0].hour == 0
    aware = write(tmp_path, "timestamp,a\n2024-01-01T00:00:00+00:00,1\n2024-01-01T01:00:00+00:00,2\n", "aware.csv")
    frame, _ = load(aware, timezone="Europe/Berlin")
    assert frame.index[0] == pd.Timestamp("2024-01-01 01:00", tz="Europe/Berlin")


def test_aware_stamps_without_timezone_are_utc_and_latin1_headers_are_read(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes("timestamp,temp \xb0C\n2024-01-01T01:00:00+01:00,1\n2024-01-01T02:00:00+01:00,2\n".encode("latin-1"))
    frame, _ = load(str(path))
    assert list(frame.columns) == ["temp \xb0C"]
    assert frame.index[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")


def test_default_targets_exclude_covariates_and_text_columns(tmp_path):
    path = write(tmp_path, table(site=["north"] * 3, a=[1, 2, 3], hour=[0, 0, 0], b=[4, 5, 6]))
    frame, report = load(path, covariates=["hour"])
    assert list(frame.columns) == ["a", "b", "hour"]
    assert (report.targets, report.covariates, report.ignored_columns) == (["a", "b"], ["hour"], ["site"])


def test_report_to_dict_is_json_and_lines_summarise(tmp_path):
    path = write(tmp_path, table(a=[1, -9999, 3, None, None, None, None, 8, 8]))
    _, report = load(path, na_values=[-9999], max_gap=2)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["missing_codes"] == 1 and data["values_masked"] == 4 and data["longest_gap"]["steps"] == 4
    assert data["rows_dropped"] == {} and data["files"] == [path]
    assert report.lines()[0] == f"read 9 rows from {path}; 1 missing-code value"
    assert report.lines()[1].endswith("4 masked; longest gap 4 steps in 'a' from 2024-01-01 00:30:00")


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["missing.csv", "drops/*.csv", "empty_folder"])
def test_no_csv_file(tmp_path, name):
    (tmp_path / "empty_folder").mkdir()
    path = str(tmp_path / name)
    with pytest.raises(InputError, match=rf"no CSV file at '{re.escape(path)}'.*\n.*data\.path="):
        load(path)


def test_empty_file(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(InputError, match=rf"'{re.escape(path)}' is empty"):
        load(path)


def test_header_without_rows(tmp_path):
    path = write(tmp_path, "timestamp,a\n")
    with pytest.raises(InputError, match=rf"'{re.escape(path)}' has a header but no rows"):
        load(path)


def test_no_timestamp_column(tmp_path):
    path = write(tmp_path, "when,a\n2024-01-01,1\n")
    with pytest.raises(InputError, match=rf"'{re.escape(path)}' has no timestamp column \(columns: when, a\).*\n.*data\.timestamp=NAME"):
        load(path)


def test_named_timestamp_column_missing(tmp_path):
    path = write(tmp_path, table(a=[1, 2]))
    with pytest.raises(InputError, match=r"has no column 'Zeit' \(columns: timestamp, a\)"):
        load(path, timestamp="Zeit")


def test_unparseable_timestamp_names_file_line_and_value(tmp_path):
    path = write(tmp_path, "timestamp,a\n2024-01-01 00:00,1\n\n2024-01-01 00:10,2\n2024-01-01 0x:20,3\n")
    with pytest.raises(InputError, match=rf"'{re.escape(path)}' line 5: timestamp '2024-01-01 0x:20'.*\n.*data\.time_format"):
        load(path)


def test_timestamp_that_does_not_match_time_format(tmp_path):
    path = write(tmp_path, "timestamp,a\n12/01/2024 10:00,1\n13/01/2024 10:00,2\n")
    with pytest.raises(InputError, match=r"line 2: timestamp '12/01/2024 10:00' does not match data.time_format"):
        load(path, time_format="%m-%d-%Y %H:%M")


def test_non_numeric_value_in_target(tmp_path):
    path = write(tmp_path, table(a=[1, 2, "2.5.1", 4], b=[1, 2, 3, 4]))
    with pytest.raises(
        InputError,
        match=rf"'{re.escape(path)}' line 4, column 'a': '2.5.1' is not a number"
        r".*\n.*data\.na_values.*data\.decimal",
    ):
        load(path)


def test_decimal_commas_read_with_the_wrong_setting_name_the_setting(tmp_path):
    path = write(tmp_path, 'timestamp;a\n2024-01-01 00:00;"2,5"\n2024-01-01 00:10;"3,5"\n')
    with pytest.raises(
        InputError,
        match=r"line 2, column 'a': '2,5' is not a number \(2 such values in the column, no numbers\)"
        r".*\n.*data\.decimal=','",
    ):
        load(path, sep=";")


def test_non_numeric_value_in_unused_column_is_ignored(tmp_path):
    path = write(tmp_path, table(a=[1, 2, "oops", 4], b=[1, 2, 3, 4]))
    frame, _ = load(path, targets=["b"])
    assert list(frame.columns) == ["b"]


def test_text_column_named_as_target(tmp_path):
    path = write(tmp_path, table(site=["north", "south"], a=[1, 2]))
    with pytest.raises(InputError, match=rf"'{re.escape(path)}' line 2, column 'site': 'north' is not a number"):
        load(path, targets=["site"])


def test_value_in_wrong_file_of_a_folder_names_that_file(tmp_path):
    write(tmp_path, table("2024-01-01 00:00", a=[1, 2]), "1.csv")
    second = write(tmp_path, table("2024-01-01 00:20", a=[3, "x3", 5]), "2.csv")
    with pytest.raises(InputError, match=rf"'{re.escape(second)}' line 3, column 'a': 'x3'"):
        load(str(tmp_path))


@pytest.mark.parametrize("setting", ["targets", "covariates"])
def test_unknown_target_or_covariate(tmp_path, setting):
    path = write(tmp_path, table(a=[1, 2], b=[3, 4], site=["n", "s"]))
    with pytest.raises(InputError, match=rf"no column 'c' in '{re.escape(path)}' \(numeric columns: a, b\)"):
        load(path, **{setting: ["c"]})


def test_all_empty_column_named(tmp_path):
    path = write(tmp_path, table(a=[1, 2, 3], b=[None, -200, None]))
    with pytest.raises(InputError, match=rf"column 'b' in '{re.escape(path)}' has no values"):
        load(path, covariates=["b"], na_values=[-200])


def test_duplicates_error_shows_timestamp_and_lines(tmp_path):
    path = write(tmp_path, "timestamp,a\n2024-01-01 00:00,0\n2024-01-01 01:00,1\n2024-01-01 01:00,3\n")
    with pytest.raises(
        InputError,
        match=rf"timestamp 2024-01-01 01:00:00 occurs more than once "
        rf"\('{re.escape(path)}' line 3, '{re.escape(path)}' line 4\)",
    ):
        load(path, duplicates="error")


def test_duplicates_error_is_within_files_only(tmp_path):
    write(tmp_path, table("2024-01-01 00:00", a=[0, 1, 2]), "1.csv")
    write(tmp_path, "timestamp,a\n\n2024-01-01 00:20:00,2\n2024-01-01 00:30:00,3\n", "2.csv")
    frame, report = load(str(tmp_path), duplicates="error")
    assert frame["a"].tolist() == [0, 1, 2, 3] and (report.duplicates, report.overlaps) == (0, 1)


def test_duplicates_error_in_long_layout_names_the_sensor(tmp_path):
    path = write(
        tmp_path,
        "timestamp,sensor,value\n2024-01-01 00:00,a,1\n2024-01-01 00:00,b,2\n"
        "2024-01-01 01:00,b,3\n2024-01-01 01:00,b,4\n2024-01-01 01:00,a,5\n",
    )
    with pytest.raises(
        InputError,
        match=rf"01:00:00 occurs more than once for sensor 'b' "
        rf"\('{re.escape(path)}' line 4, '{re.escape(path)}' line 5\)",
    ):
        load(path, layout="long", duplicates="error")


def test_long_gap_fails_when_asked(tmp_path):
    path = write(tmp_path, table(a=[1, None, None, None, None, 6]))
    with pytest.raises(
        InputError,
        match=rf"'{re.escape(path)}' column 'a': a gap of 4 steps from 2024-01-01 00:10:00 to "
        r"2024-01-01 00:40:00.*\n.*data\.max_gap=4.*data\.long_gaps=mask",
    ):
        load(path, long_gaps="fail")


def test_freq_that_is_not_an_offset_alias(tmp_path):
    path = write(tmp_path, table(a=[1, 2]))
    with pytest.raises(InputError, match=r"data\.freq='half-hourly' is not a pandas offset alias"):
        load(path, freq="half-hourly")


@pytest.mark.parametrize("setting", ["layout", "aggregation", "duplicates", "long_gaps"])
def test_invalid_choice_lists_valid_values(tmp_path, setting):
    path = write(tmp_path, table(a=[1, 2]))
    with pytest.raises(InputError, match=rf"data\.{setting}='bogus' is not valid.*\nUse one of: \w+, \w+"):
        load(path, **{setting: "bogus"})


def test_row_with_extra_fields_names_the_line(tmp_path):
    path = write(tmp_path, "timestamp,a\n2024-01-01 00:00,1\n2024-01-01 00:10,1,2\n")
    with pytest.raises(InputError, match=rf"'{re.escape(path)}' is not a regular CSV table: Expected 2 fields in line 3"):
        load(path)


def test_long_layout_without_sensor_column(tmp_path):
    path = write(tmp_path, table(a=[1, 2]))
    with pytest.raises(InputError, match=r"has no column 'sensor' \(columns: timestamp, a\).*\n.*data\.sensor_column"):
        load(path, layout="long")


def test_only_one_timestamp_needs_freq(tmp_path):
    path = write(tmp_path, table(a=[1]))
    with pytest.raises(InputError, match=r"single timestamp.*\n.*data\.freq"):
        load(path)
    frame, _ = load(path, freq="1h")
    assert len(frame) == 1 and np.isclose(frame["a"].iloc[0], 1)


# --- numbers finite or refused, nothing dropped silently (issue 11) -------------------------------


def test_infinite_values_are_missing_when_asked_and_counted(tmp_path):
    path = write(tmp_path, table(a=[1, "inf", 3, "-Infinity", 5], b=[1, "9" * 400, 3, 4, 5]))
    with pytest.raises(InputError, match=r"line 3, column 'a': inf is not a finite number"):
        load(path)
    frame, report = load(path, nonfinite="missing")
    assert frame["a"].tolist() == [1, 2, 3, 4, 5] and frame["b"].tolist() == [1, 2, 3, 4, 5]
    assert report.nonfinite_values == 3 and "3 infinite values" in report.lines()[0]


def test_infinite_value_in_long_layout_names_the_sensor(tmp_path):
    path = write(tmp_path, "timestamp,sensor,value\n2024-01-01 00:00,a,1\n2024-01-01 00:00,b,inf\n2024-01-01 01:00,a,2\n")
    with pytest.raises(InputError, match=rf"'{re.escape(path)}' line 3, sensor 'b': inf is not a finite number"):
        load(path, layout="long")


def test_spread_that_overflows_names_the_largest_value(tmp_path):
    path = write(tmp_path, table(a=[1, 2, "-1e300", 4], b=[1, 2, 3, 4]))
    with pytest.raises(InputError, match=rf"'{re.escape(path)}' line 4, column 'a': -1e\+300 is too large"):
        load(path)


@pytest.mark.parametrize(
    ("cells", "settings", "expected"),
    [
        (['"10,037.7"', '"1,234,567"', "12"], {"thousands": ","}, [10037.7, 1234567, 12]),
        (["1.234,5", "2.000", "3,25"], {"sep": ";", "decimal": ",", "thousands": "."}, [1234.5, 2000, 3.25]),
    ],
)
def test_thousands_separators(tmp_path, cells, settings, expected):
    sep = settings.get("sep", ",")
    path = write(tmp_path, f"timestamp{sep}a\n" + "".join(f"2024-01-01 0{i}:00{sep}{cell}\n" for i, cell in enumerate(cells)))
    frame, _ = load(path, **settings)
    assert frame["a"].tolist() == pytest.approx(expected)


def test_thousands_separators_unread_say_which_setting_reads_them(tmp_path):
    path = write(tmp_path, 'timestamp,a,b\n2024-01-01 00:00,"10,037.7",1\n2024-01-01 01:00,"9,999.0",2\n')
    with pytest.raises(InputError, match=r"line 2, column 'a': '10,037.7' is not a number.*\n.*data\.thousands=','"):
        load(path)


def test_a_column_with_some_numbers_is_never_dropped(tmp_path):
    path = write(tmp_path, table(a=[1, 2, 3, 4], b=[1, "oops", "broken", 4]))
    with pytest.raises(
        InputError,
        match=r"line 3, column 'b': 'oops' is not a number \(2 such values in the column, 2 numbers\)"
        r".*\n.*data\.na_values.*data\.targets=\[a\]",
    ):
        load(path)


def test_text_columns_are_ignored_aloud(tmp_path, capsys):
    path = write(tmp_path, table(site=["north", "south", "east"], a=[1, 2, 3], empty=[None, None, None]))
    frame, report = load(path)
    assert list(frame.columns) == ["a"] and report.ignored_columns == ["site", "empty"]
    assert "note: ignored columns with no numbers: 'site', 'empty'" in capsys.readouterr().err


def test_duplicate_column_names_are_an_error(tmp_path):
    path = write(tmp_path, "timestamp,a,b,a\n2024-01-01 00:00,1,2,3\n")
    with pytest.raises(InputError, match=rf"'{re.escape(path)}': the header names column 'a' twice \(columns 2 and 4\)"):
        load(path)


# --- timestamps cannot blow up memory ------------------------------------------------------------


def test_year_typo_is_refused_before_the_grid_is_built_naming_its_line(tmp_path):
    stamps = [str(pd.Timestamp("2025-03-01") + pd.Timedelta(seconds=i)) for i in range(50)]
    stamps[0] = "2015-03-01 00:00:00"
    path = write(tmp_path, "timestamp,a\n" + "".join(f"{stamp},{i}\n" for i, stamp in enumerate(stamps)))
    with pytest.raises(
        InputError,
        match=rf"'{re.escape(path)}' line 2: timestamp 2015-03-01 00:00:00 lies 10 years "
        r"before the rest.*would need 315,619,250 steps for 50 timestamps",
    ):
        load(path)


def test_grid_far_finer_than_the_readings_needs_max_grid_factor(tmp_path):
    path = write(tmp_path, table(freq="1h", a=list(range(300))))
    with pytest.raises(
        InputError,
        match=r"a grid every 1min from .* would need 17,941 steps for 300 timestamps.*first '.*' line 2, "
        r"last '.*' line 301.*\n.*data\.max_grid_factor",
    ):
        load(path, freq="1min")
    frame, report = load(path, freq="1min", max_grid_factor=100, max_gap=100)
    assert len(frame) == 17_941 and report.steps_inserted == 17_641


# --- files recognised for what they are, settings checked up front --------------------------------


def test_utf8_byte_order_mark_and_explicit_utf16(tmp_path):
    text = table(a=[1, 2, 3])
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "wide.csv").write_bytes(text.encode("utf-16"))
    assert load(str(tmp_path / "bom.csv"))[0]["a"].tolist() == [1, 2, 3]
    with pytest.raises(InputError, match=r"is UTF-16 text \(byte-order mark\), not a CSV text file.*\n.*data\.encoding=utf-16"):
        load(str(tmp_path / "wide.csv"))
    assert load(str(tmp_path / "wide.csv"), encoding="utf-16")[0]["a"].tolist() == [1, 2, 3]


def test_tab_separator_as_typed_on_a_command_line(tmp_path):
    path = write(tmp_path, table(a=[1, 2, 3]).replace(",", "\t"))
    assert load(path, sep="\\t")[0]["a"].tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"sep": ""}, r"data\.sep='' is not valid"),
        ({"sep": "ab"}, r"data\.sep='ab' is not valid"),
        ({"sep": None}, r"data\.sep=None is not valid"),
        ({"decimal": ","}, r"data\.decimal and data\.sep are both ','"),
        ({"decimal": "1"}, r"data\.decimal='1' is not valid"),
        ({"thousands": "."}, r"data\.thousands and data\.decimal are both '\.'"),
        ({"encoding": "nope"}, r"data\.encoding='nope' is not a known text encoding"),
        ({"freq": "-1h"}, r"data\.freq='-1h' is not a positive step"),
        ({"max_grid_factor": 0}, r"data\.max_grid_factor=0 must be at least 1"),
        ({"max_gap": "three"}, r"data\.max_gap='three' is not a whole number of steps"),
        ({"stuck_steps": 2.5}, r"data\.stuck_steps=2\.5 is not a whole number of steps"),
    ],
)
def test_settings_refused_before_reading(tmp_path, settings, expected):
    with pytest.raises(InputError, match=expected):
        load(str(tmp_path / "not-even-there.csv"), **settings)


# --- the zero-copy path ---------------------------------------------------------------------------


def test_clean_wide_file_is_never_copied_after_reading(tmp_path):
    """The frame load_frame returns for a wide file with every step present once wraps the block the reader filled."""
    from forecast import reading, regular
    from forecast.frame import DataReport

    def stages(path):
        spec = CsvSpec(path=path)
        intake = reading.read(spec, DataReport(files=[path]))
        data = intake.data()
        return intake, regular.regularise(intake, data, intake.columns(data), None)

    intake, frame = stages(write(tmp_path, table(a=[1.5, 2, 3, 4], b=[5, 6, 7, 8]), "clean.csv"))
    assert np.shares_memory(frame.to_numpy(), intake.blocks[0]) and frame["a"].tolist() == [1.5, 2, 3, 4]
    gap = "timestamp,a\n2024-01-01 00:00,1\n2024-01-01 00:10,2\n2024-01-01 00:30,4\n2024-01-01 00:40,5\n"
    intake, frame = stages(write(tmp_path, gap, "gap.csv"))
    assert not np.shares_memory(frame.to_numpy(), intake.blocks[0]) and frame["a"].tolist() == [1, 2, 3, 4, 5]


def test_number_too_long_for_pandas_in_a_text_column_is_still_infinite(tmp_path):
    path = write(tmp_path, 'timestamp,a\n2024-01-01 00:00,"10,037.5"\n2024-01-01 01:00,' + "9" * 500_000 + "\n2024-01-01 02:00,3.5\n")
    with pytest.raises(InputError, match=r"line 3, column 'a': '9999.*' \(500,000 characters\) is not a finite number"):
        load(path, thousands=",")
    frame, report = load(path, thousands=",", nonfinite="missing")
    assert frame["a"].tolist() == [10037.5, 5020.5, 3.5] and report.nonfinite_values == 1


def test_header_split_by_another_separator_names_it(tmp_path):
    path = write(tmp_path, "timestamp;a;b\n2024-01-01 00:00;1;2\n")
    with pytest.raises(
        InputError,
        match=r"has no timestamp column \(columns: timestamp;a;b\).\nThe header looks separated by ';': "
        r"set \"data\.sep=';'\"",
    ):
        load(path)


def test_timestamps_without_readings(tmp_path):
    path = write(tmp_path, "timestamp\n2024-01-01 00:00\n2024-01-01 01:00\n")
    with pytest.raises(InputError, match=r"no numeric column is left to forecast"):
        load(path)
