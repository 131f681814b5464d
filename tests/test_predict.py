"""python -m forecast.predict as a user runs it, against the champion that a real retrain promoted."""

import re

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from mlflow import MlflowClient

from forecast import pyfunc
from forecast.errors import InputError
from forecast.frame import CsvSpec, load_frame

pytestmark = pytest.mark.e2e  # runs the commands as subprocesses, as a user does

DATA = ["data=csv", "data.path=drops", "data.na_values=[-9999]"]  # the drop the champion was trained on
TARGETS = ["outdoor_temp_c", "indoor_temp_c", "humidity_pct", "co2_ppm", "power_kw"]


def test_forecast_of_the_next_steps_round_trips_through_the_registered_model(champion, tmp_path):
    folder, _ = champion
    done = run_cli("forecast.predict", "model_uri=models:/forecast@champion", f"output={tmp_path}/forecast.csv", *DATA, cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {tmp_path}/forecast.csv: 24 steps every 30min from 2025-03-09 12:00:00 to 2025-03-09 23:30:00" in done.stdout
    out = pd.read_csv(tmp_path / "forecast.csv", parse_dates=["last_reading", "timestamp"])
    assert list(out.columns) == ["last_reading", "timestamp", *TARGETS]
    assert (out["last_reading"] == pd.Timestamp("2025-03-09 11:30")).all()  # the origin: the end of the data
    assert (out["timestamp"] == pd.date_range("2025-03-09 12:00", periods=24, freq="30min")).all()
    assert out["power_kw"].between(0, 200).all() and out["co2_ppm"].between(200, 3000).all()  # data units
    # the same numbers as the registered model gives, in this process, for the last 48 repaired readings
    frame, _ = load_frame(CsvSpec(path=str(folder / "drops"), na_values=[-9999]))
    readings = frame.tail(48).reset_index()
    readings["timestamp"] = readings["timestamp"].astype(str)
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    expected = mlflow.pyfunc.load_model("models:/forecast@champion").predict(readings)
    np.testing.assert_allclose(out[TARGETS].to_numpy(), expected[TARGETS].to_numpy(), rtol=1e-6)


def test_backtest_forecasts_every_window_of_the_span_and_agrees_with_the_retrain(champion, tmp_path):
    folder, _ = champion
    done = run_cli("forecast.predict", "model_uri=models:/forecast/1", "span=test", f"output={tmp_path}/b.csv", *DATA, cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    out = pd.read_csv(tmp_path / "b.csv", parse_dates=["last_reading", "timestamp"])
    assert out["last_reading"].nunique() == 577 and len(out) == 577 * 24  # every test window of 3,000 rows
    assert (out["timestamp"] - out["last_reading"] == out["step"] * pd.Timedelta("30min")).all()
    # the first retrain scored version 1 on these very windows: the same error in data units
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    first = client.search_runs([client.get_experiment_by_name("forecast").experiment_id], "tags.champion_before = 'none'")[0]
    mae = np.mean([np.abs(out[t] - out[f"{t}:actual"]).mean() for t in TARGETS])
    assert mae == pytest.approx(first.data.metrics["gru/mae"], rel=1e-6)


def test_data_at_another_frequency_is_a_short_error(champion, tmp_path):
    folder, _ = champion
    done = run_cli("forecast.predict", f"output={tmp_path}/f.csv", *DATA, "data.freq=1h", cwd=folder)
    message = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert (
        len(message) == 2
        and message[0].startswith("error: ")
        and message[0].endswith("drops has a reading every 1h but the model was trained on one every 30min.")
    )
    assert message[1] == "Resample it with data.freq=30min, or use a model trained at 1h."
    assert not (tmp_path / "f.csv").exists()


CASES = {  # data that does not fit the model -> what the message names (the command prints it as above)
    "columns": (
        lambda frame: frame[["power_kw", "co2_ppm"]],
        "lacks column(s) outdoor_temp_c, indoor_temp_c, humidity_pct that the model reads",
    ),
    "too short": (lambda frame: frame.tail(30), "has 30 rows every 30min; the model needs at least the last 48 readings"),
}


@pytest.mark.parametrize("case", CASES)
def test_the_model_names_what_does_not_fit(champion, case):
    folder, _ = champion
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    _, model = pyfunc.load("models:/forecast@champion")
    frame, report = load_frame(CsvSpec(path=str(folder / "drops"), na_values=[-9999]))
    change, expected = CASES[case]
    with pytest.raises(InputError, match=re.escape(expected)):
        model.check(change(frame), report.freq, "drops")
