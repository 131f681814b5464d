"""The guards of issue 11, in-process and fast: exit statuses of `reported()`, the finite checks, the
served model's payload checks and the training settings checked up front."""

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.exceptions import MlflowException
from torch import nn

from forecast import training
from forecast.errors import InputError, Interrupted, JobFailed, held, reported
from forecast.forecaster import Forecaster
from forecast.lightning_module import StopOnNonFinite
from forecast.networks import build_network
from forecast.pyfunc import BadInput, ForecastPyfunc
from forecast.tracking import finite
from forecast.windows import Scaler

CONF = str(Path(__file__).resolve().parents[1] / "conf")

# --- reported(): one place turns outcomes into exit statuses


@pytest.mark.parametrize(
    "raised, status, line",
    [
        (InputError("data.sep='': give one character"), 2, "error: data.sep='': give one character"),
        (JobFailed("train/loss became nan in epoch 3"), 1, "error: train/loss became nan in epoch 3"),
        (Interrupted(signal.SIGTERM), 143, "interrupted by SIGTERM"),
        (KeyboardInterrupt(), 130, "interrupted by SIGINT"),
    ],
)
def test_reported_turns_each_outcome_into_its_exit_status_and_one_line(raised, status, line, capsys):
    with pytest.raises(SystemExit) as stop, reported():
        raise raised
    assert stop.value.code == status
    assert capsys.readouterr().err.strip() == line


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_real_signal_inside_reported_exits_128_plus_its_number_and_handlers_come_back(sig, status, capsys):
    before = signal.getsignal(sig)
    with pytest.raises(SystemExit) as stop, reported():
        os.kill(os.getpid(), sig)
        for _ in range(100):  # the handler runs between bytecodes of this thread
            pass
        pytest.fail("the signal did not interrupt the block")
    assert stop.value.code == status and signal.getsignal(sig) is before
    assert capsys.readouterr().err.strip() == f"interrupted by {signal.Signals(sig).name}"


def test_a_signal_taken_by_another_thread_during_a_store_write_is_raised_when_the_write_ends(capsys):
    """Python runs handlers in the main thread whichever thread the kernel gave the signal to, so blocking it
    for the main thread alone is not enough: the handler notes it and held() raises it at the end."""
    go = threading.Event()
    sender = threading.Thread(target=lambda: go.wait() and os.kill(os.getpid(), signal.SIGTERM))  # unblocked: started first
    sender.start()
    finished = []
    with pytest.raises(SystemExit) as stop, reported():
        with held():
            go.set()
            sender.join()
            for _ in range(100_000):  # the handler runs between these bytecodes, and must not raise here
                pass
            time.sleep(0.1)
            finished.append(True)
        pytest.fail("the held signal was not raised when the block ended")
    assert finished == [True] and stop.value.code == 143


def test_interrupted_is_not_a_keyboard_interrupt_so_lightning_does_not_turn_it_into_exit_1():
    assert not isinstance(Interrupted(signal.SIGINT), (KeyboardInterrupt, Exception))


# --- finite figures


def test_finite_passes_finite_metrics_and_names_the_first_non_finite():
    assert finite({"test/mae": 1.0, "model/params": 3}, "x") == {"test/mae": 1.0, "model/params": 3}
    with pytest.raises(JobFailed, match=r"the test span: test/mse_scaled=nan, test/rmse=inf is not finite; nothing was logged"):
        finite({"test/mae": 1.0, "test/mse_scaled": math.nan, "test/rmse": math.inf}, "the test span")


class _Trainer:
    def __init__(self, **metrics):
        self.callback_metrics = {k: torch.tensor(v) for k, v in metrics.items()}
        self.current_epoch = 2


@pytest.mark.parametrize("key", ["train/loss", "val/loss"])
def test_a_non_finite_epoch_loss_stops_training(key):
    guard = StopOnNonFinite()
    guard.on_train_epoch_end(_Trainer(**{"train/loss": 0.5, "val/loss": 0.7}), None)  # finite: nothing happens
    with pytest.raises(JobFailed, match=rf"{key} became nan in epoch 3"):
        guard.on_train_epoch_end(_Trainer(**{"train/loss": 0.5, "val/loss": 0.7} | {key: math.nan}), None)


# --- training settings, before any data is read


def train_config(*overrides: str):
    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("train", overrides=["data.lookback=48", "data.horizon=24", *overrides])


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.segment_len=96", r"model.segment_len=96 is longer than data.lookback=48"),
        ("trainer.max_epochs=0", r"trainer.max_epochs=0: train for at least one epoch"),
        ("patience=-1", r"patience=-1"),
        ("trainer.gradient_clip_val=-1", r"trainer.gradient_clip_val=-1"),
        ("model.lr=inf", r"model.lr must be a positive finite number, got inf"),
        ("model.lr=0", r"model.lr must be a positive finite number, got 0"),
        ("model.weight_decay=-0.1", r"model.weight_decay must be zero or a positive finite number"),
        ("model.dropout=1.5", r"model.dropout must be in \[0, 1\)"),
        ("model.hidden_size=0", r"model.hidden_size must be a positive integer"),
        ("model.loss=mape", r"model.loss='mape' is not one of mse, mae, huber"),
    ],
)
def test_out_of_range_training_settings_are_refused_up_front(override, message):
    with pytest.raises(InputError, match=message):
        training.check_settings(train_config(override))


def test_good_settings_pass_and_a_segment_as_long_as_the_lookback_is_allowed():
    training.check_settings(train_config())
    training.check_settings(train_config("model.segment_len=48"))


# --- the served model's payload checks (what `mlflow models serve` answers with HTTP 400)


class _NaNNet(nn.Module):
    lookback, horizon = 8, 4

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.full((len(x), self.horizon, 2), math.nan)


@pytest.fixture(scope="module")
def served():
    net = build_network("recurrent", n_inputs=2, target_index=[0, 1], lookback=8, horizon=4, hidden_size=4, segment_len=4)
    model = ForecastPyfunc()
    model.forecaster = Forecaster(net, Scaler(mean=np.array([10.0, 50.0]), std=np.array([2.0, 5.0])), ["a", "b"], ["a", "b"], "1h", {})
    return model


def payload(rows=12, changes=None):
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2025-01-01", periods=rows, freq="h").astype(str),
            "a": np.linspace(9, 11, rows),
            "b": np.linspace(45, 55, rows),
        }
    )
    for (column, row), value in (changes or {}).items():
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
    return frame


def test_a_good_payload_gives_h_finite_steps_after_its_last_row(served):
    out = served.predict(None, payload())
    assert list(out.columns) == ["timestamp", "a", "b"] and len(out) == 4
    assert out["timestamp"].iloc[0] == pd.Timestamp("2025-01-01 12:00") and np.isfinite(out[["a", "b"]].to_numpy()).all()
    assert list(served.predict(None, payload().drop(columns="timestamp")).columns) == ["step", "a", "b"]


BAD = {  # payload -> what the message says
    "empty": (lambda: payload().iloc[:0], "model input is empty; send the last 8 readings of a, b with their timestamp"),
    "missing column": (lambda: payload().drop(columns="b"), "model input lacks column(s) b; it needs a, b"),
    "duplicate column": (lambda: pd.concat([payload(), payload()[["a"]]], axis=1), "model input has column(s) a more than once"),
    "too few rows": (lambda: payload(5), "model input has 5 rows; the model needs the last 8 readings"),
    "stale sensor": (
        lambda: payload(changes={("b", 10): None, ("b", 11): None}),
        "model input column b is missing its most recent readings (its last reading in these rows is at 2025-01-01 09:00:00 (row 10))",
    ),
    "gap inside": (lambda: payload(changes={("a", 6): None}), "model input column a is missing at 2025-01-01 06:00:00 (row 7)"),
    "infinity": (lambda: payload(changes={("a", 11): math.inf}), "model input column a holds inf at 2025-01-01 11:00:00 (row 12)"),
    "overflowing scale": (
        lambda: payload(changes={("b", 11): 1e308}),
        "model input column b holds 1e+308 at 2025-01-01 11:00:00 (row 12), beyond any scale",
    ),
    "text": (lambda: payload(changes={("a", 9): "abc"}), "model input column a in row 10 holds 'abc', not a number"),
    "true/false": (lambda: payload(changes={("a", 9): True}), "model input column a holds true/false values"),
    "bad timestamp": (
        lambda: payload(changes={("timestamp", 8): "yesterday"}),
        "model input timestamp in row 9 is 'yesterday', not a date",
    ),
    "numeric timestamp": (
        lambda: payload(changes={("timestamp", 8): 1735722000}),
        "model input timestamp in row 9 is 1735722000, not a date",
    ),
    "out of order": (lambda: payload().iloc[::-1], "model input timestamp in row 6 is 2025-01-01 06:00:00 after 2025-01-01 07:00:00"),
    "gap in time": (lambda: payload().drop(index=9), "model input timestamp in row 10 is 2025-01-01 10:00:00 after 2025-01-01 08:00:00"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_payload_is_refused_with_one_line_naming_the_cause(served, case):
    make, expected = BAD[case]
    with pytest.raises(BadInput) as refused:
        served.predict(None, make())
    message = str(refused.value)
    assert message.startswith(expected) and "\n" not in message


def test_a_non_finite_forecast_is_refused(served):
    model = ForecastPyfunc()
    model.forecaster = Forecaster(_NaNNet(), served.forecaster.scaler, ["a", "b"], ["a", "b"], "1h", {})
    with pytest.raises(BadInput, match="the forecast from these readings is not finite"):
        model.predict(None, payload())


def test_bad_input_is_a_400_for_the_server_and_keeps_its_message_without_a_stack_trace():
    error = BadInput("model input is empty")
    assert isinstance(error, InputError) and isinstance(error, MlflowException)
    assert error.get_http_status_code() == 400
    error.message = f"Failed to predict data '{payload()}'. \nError: {error.message}"  # what the scoring server does
    body = json.loads(error.serialize_as_json())
    assert body["message"] == "model input is empty" and "stack_trace" not in body


# --- security hygiene


def test_every_torch_load_of_the_package_refuses_to_unpickle_code():
    package = Path(__file__).resolve().parents[1] / "forecast"
    calls = [(f.name, line.strip()) for f in sorted(package.glob("*.py")) for line in f.read_text().splitlines() if "torch.load(" in line]
    assert calls, "no torch.load found: the check would be vacuous"
    assert all("weights_only=True" in line for _, line in calls), calls


def test_commands_started_together_on_a_new_sqlite_store_take_turns_creating_it(tmp_path):
    """Two processes opening a store that does not exist yet: without the lock one fails creating its tables."""
    start = time.time() + 4  # both past their imports, then at the same instant
    code = (
        f"import sys, time; from forecast import tracking; time.sleep(max(0, {start} - time.time())); print(tracking.connect('forecast'))"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "MLFLOW_DISABLE_TELEMETRY": "true"}
    both = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]  # fmt: skip
    done = [p.communicate(timeout=120) for p in both]
    assert [p.returncode for p in both] == [0, 0], done
    assert done[0][0].split()[-1] == done[1][0].split()[-1]  # one experiment, the same id for both
