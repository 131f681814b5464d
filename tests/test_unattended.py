"""Unattended runs never lie (issue 11, the runtime half): every command run as a scheduler runs it.

Each case runs the real command in a temp dir and checks the exit status, that the message names
the cause, that no traceback is printed, and what the tracking store holds afterwards: no RUNNING
run, no FINISHED run with a non-finite metric, nothing registered that should not be. The served
model's HTTP answers are in tests/test_serve.py (one server start for all payloads).

Cheap cases (refused before any data is read) run concurrently from one module fixture, so the file
stays within a few minutes on two cores; the champion is the session's (tests/conftest.py).
"""

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from conftest import REPO, RETRAIN, run_cli, sample_drop
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

import forecast
from forecast import pyfunc, training
from forecast.errors import InputError

pytestmark = pytest.mark.e2e  # runs the commands as subprocesses, as a user does

TINY = ["data.lookback=48", "data.horizon=24", "model.hidden_size=8", "trainer.max_epochs=1"]
DATA = ["data=csv", "data.path=drops", "data.na_values=[-9999]"]  # the champion's drop
SLOW = ["data.lookback=48", "data.horizon=24", "model.hidden_size=8", "trainer.max_epochs=50", "patience=50"]  # runs until stopped


# --- what every case checks


def assert_clean(done, status: int, *needles: str) -> str:
    """Exit `status`, no traceback, and (for a failure) an `error:` line naming every needle; returns stderr."""
    out = done.stdout + done.stderr
    assert done.returncode == status, (done.returncode, out[-3000:])
    assert "Traceback" not in out and "Error executing job" not in out, out[-3000:]
    if status in (1, 2):
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, done.stderr[-3000:]
        after = done.stderr.split(errors[0], 1)[1].strip().splitlines()
        assert len(after) <= 1, done.stderr[-3000:]  # at most one more line
    for needle in needles:
        assert needle in done.stderr, (needle, done.stderr[-3000:])
    return done.stderr


def store(folder: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder}/mlflow.db")


def all_runs(folder: Path) -> list:
    if not (folder / "mlflow.db").exists():
        return []
    client = store(folder)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def versions(folder: Path) -> list[str]:
    if not (folder / "mlflow.db").exists():
        return []
    return sorted(f"{v.name}/{v.version}" for v in store(folder).search_model_versions())


def assert_truthful_store(folder: Path) -> None:
    """No RUNNING run; no FINISHED run with a non-finite metric; every registered version from a FINISHED, finite run."""
    runs = all_runs(folder)
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    for run in runs:
        if run.info.status == "FINISHED":
            assert all(math.isfinite(v) for v in run.data.metrics.values()), (run.info.run_name, run.data.metrics)
    if runs:
        client = store(folder)
        for v in client.search_model_versions():
            source = client.get_run(v.run_id)
            assert source.info.status == "FINISHED" and all(math.isfinite(x) for x in source.data.metrics.values())


def with_train_args(value: str) -> list[str]:
    """conftest's RETRAIN settings with train_args replaced (Hydra refuses the same key twice)."""
    return [a for a in RETRAIN if not a.startswith("train_args")] + [f"train_args={value}"]


def popen(module: str, *args: str, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    env |= {"MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def stop_after(process: subprocess.Popen, text: str, sig: int, timeout: float = 240) -> subprocess.CompletedProcess:
    """Send `sig` once `process` prints a line holding `text`; its completed output."""
    seen, deadline = [], time.monotonic() + timeout
    for line in process.stdout:
        seen.append(line)
        if text in line or time.monotonic() > deadline:
            break
    assert any(text in line for line in seen), "".join(seen)[-3000:] + process.stderr.read()[-3000:]
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, "".join(seen) + out, err)


# --- 1. exit statuses and signals


@pytest.mark.parametrize(
    "sig, status, extra",
    [
        (signal.SIGINT, 130, []),  # Ctrl-C
        (signal.SIGTERM, 143, ["-m", "model=gru,lstm"]),  # kill, a stopped service; a multirun stops at the first signal
    ],
    ids=["SIGINT", "SIGTERM-multirun"],
)
def test_a_signal_mid_training_exits_128_plus_its_number_and_the_run_is_killed(tmp_path, sig, status, extra):
    done = stop_after(popen("forecast.train", *extra, *SLOW, cwd=tmp_path), "epoch   1:", sig)
    assert_clean(done, status)
    (run,) = all_runs(tmp_path)  # the multirun's second training never started
    assert run.info.status == "KILLED" and run.data.tags["architecture"] == "gru"
    assert done.stderr.strip().splitlines()[-1] == f"interrupted by {signal.Signals(sig).name}; run {run.info.run_id} marked KILLED"
    assert versions(tmp_path) == []


def test_the_scheduler_stopped_by_sigterm_exits_143(tmp_path):
    process = popen("forecast.schedule", "interval_s=3600", f"jobstore=sqlite:///{tmp_path}/schedule.db", cwd=tmp_path)
    done = stop_after(process, "next run at", signal.SIGTERM)  # once the job is scheduled (Hydra logs to stdout)
    assert_clean(done, 143)
    assert "interrupted by SIGTERM" in done.stderr


# --- 2. non-finite numbers are never a success


@pytest.fixture(scope="module")
def diverging(tmp_path_factory):
    """A training whose loss becomes NaN (model.lr=1e30), asked to register its model, in a store holding a dead run of this host."""
    folder = tmp_path_factory.mktemp("diverging")
    client = store(folder)
    experiment = client.create_experiment("forecast", artifact_location=(folder / "mlruns").as_uri())
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid whose process has exited
    dead = client.create_run(experiment, tags={"process": f"{socket.gethostname()}:{gone.pid}"}).info.run_id
    done = run_cli("forecast.train", *TINY, "model.lr=1e30", "tracking.register=forecast", cwd=folder)
    return folder, done, dead


def test_a_loss_that_becomes_nan_fails_the_run_with_exit_1(diverging):
    folder, done, dead = diverging
    assert_clean(done, 1, "train/loss became nan in epoch 1, so training stopped; lower model.lr")
    (run,) = [r for r in all_runs(folder) if r.info.run_id != dead]
    assert run.info.status == "FAILED"
    assert "test/mse_scaled" not in run.data.metrics and "train/loss" not in run.data.metrics  # the NaN epoch is not recorded


def test_a_diverged_training_logs_and_registers_no_model(diverging):
    folder, _, dead = diverging
    assert versions(folder) == []
    (run,) = [r for r in all_runs(folder) if r.info.run_id != dead]
    assert "model" not in {a.path for a in store(folder).list_artifacts(run.info.run_id)}
    assert_truthful_store(folder)


def test_a_training_marks_its_own_hosts_dead_runs_killed(diverging):
    folder, done, dead = diverging
    assert store(folder).get_run(dead).info.status == "KILLED"
    assert f"marked run {dead}" in done.stdout and "KILLED: its process is gone" in done.stdout


@pytest.fixture(scope="module")
def service(champion, tmp_path_factory):
    """A copy of the champion's folder (store, registry, drops), for retrains that may move the alias."""
    folder = tmp_path_factory.mktemp("service-copy")
    shutil.copytree(champion[0], folder, dirs_exist_ok=True)
    return folder


def test_a_retrain_whose_challenger_diverges_exits_1_and_changes_nothing(service):
    before = versions(service)
    alias = store(service).get_registered_model("forecast").aliases["champion"]
    args = with_train_args('["model.hidden_size=8","trainer.max_epochs=1","model.lr=1e30"]')
    done = run_cli("forecast.retrain", *args, cwd=service)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
    assert "train/loss became nan" in done.stderr and "challenger gru failed (exit status 1)" in done.stdout
    assert f"decision: keep forecast/{alias}" in done.stdout
    assert versions(service) == before and store(service).get_registered_model("forecast").aliases["champion"] == alias
    assert_truthful_store(service)


def test_a_retrain_stopped_by_sigterm_passes_it_on_and_both_runs_end_killed(service):
    before = versions(service)
    args = with_train_args('["model.hidden_size=8","trainer.max_epochs=50","patience=50"]')
    done = stop_after(popen("forecast.retrain", *args, cwd=service), "epoch   1:", signal.SIGTERM)
    assert_clean(done, 143)
    client = store(service)
    (retrain,) = client.search_runs([client.get_experiment_by_name("forecast").experiment_id], "tags.kind = 'retrain'", max_results=1)
    (child,) = client.search_runs([retrain.info.experiment_id], f"tags.mlflow.parentRunId = '{retrain.info.run_id}'")
    assert retrain.info.status == "KILLED" and child.info.status == "KILLED"
    assert f"interrupted by SIGTERM; run {retrain.info.run_id} marked KILLED" in done.stderr
    assert versions(service) == before
    assert_truthful_store(service)


def register_nan_champion(folder: Path) -> str:
    """Register a copy of the champion whose weights are NaN and point the alias at it (a model logged before this issue)."""
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    _, forecaster = pyfunc.load("models:/forecast@champion")
    with torch.no_grad():
        for p in forecaster.net.parameters():
            p.fill_(math.nan)
    bundle = forecaster.save(folder / "nan.pt")
    package = Path(forecast.__file__).parent
    experiment = mlflow.get_experiment_by_name("forecast").experiment_id
    with mlflow.start_run(experiment_id=experiment, run_name="nan-champion"):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(package / "served_model.py"),
            artifacts={"bundle": str(bundle)},
            code_paths=[str(package)],
            registered_model_name="forecast",
            pip_requirements=["torch"],
        )
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias("forecast", "champion", version)
    return version


@pytest.fixture(scope="module")
def nan_champion(service):
    nan_version = register_nan_champion(service)
    done = run_cli("forecast.retrain", *RETRAIN, cwd=service)
    client = store(service)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("forecast").experiment_id],
        f"tags.kind = 'retrain' and tags.champion_before = 'forecast/{nan_version}'",
    )
    return service, done, nan_version, run


def test_a_champion_scoring_nan_is_replaced_by_a_challenger_that_beats_the_baseline(nan_champion):
    folder, done, nan_version, run = nan_champion
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr, done.stdout[-3000:] + done.stderr[-3000:]
    after = store(folder).get_registered_model("forecast").aliases["champion"]
    assert after != nan_version and run.data.tags["decision"] == "promote" and run.data.tags["champion_after"] == f"forecast/{after}"
    assert "the champion cannot be scored on this holdout (its mse_scaled is nan)" in run.data.tags["reason"]
    assert "champion/mse_scaled" not in run.data.metrics  # recorded as text, never as a NaN metric
    assert_truthful_store(folder)


def test_a_retrain_records_the_last_value_baseline_it_judged_against(nan_champion):
    _, done, _, run = nan_champion
    metrics = run.data.metrics
    assert {"baseline/mse_scaled", "baseline/mae_scaled", "baseline/mae", "baseline/rmse"} <= set(metrics)
    assert metrics["gru/mse_scaled"] < metrics["baseline/mse_scaled"]
    assert "baseline   repeat the last value: mse_scaled" in done.stdout


# --- 3. forecasts start where the data ends; output paths are checked up front


def stale_drop(source: Path, folder: Path) -> None:
    """The champion's drop with the last 20 readings of power_kw empty (a sensor that stopped reporting), in folder/stale."""
    lines = (source / "drops" / "day1.csv").read_text().splitlines()
    for i in range(len(lines) - 20, len(lines)):
        lines[i] = lines[i].rsplit(",", 1)[0] + ","
    (folder / "stale").mkdir()
    (folder / "stale" / "day1.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def predicted(champion, tmp_path_factory):
    """Every predict case, run concurrently against the champion: name -> (completed process, output folder)."""
    folder = champion[0]
    out = tmp_path_factory.mktemp("predict")
    (out / "a-file").write_text("")
    stale_drop(folder, out)
    stale = ["data=csv", f"data.path={out}/stale", "data.na_values=[-9999]"]
    cases = {
        "no such folder": [*DATA, "output=/nonexistent/dir/f.csv"],
        "a file as folder": [*DATA, f"output={out}/a-file/f.csv"],
        "a folder as output": [*DATA, f"output={out}"],
        "stale sensor": [*stale, f"output={out}/stale.csv"],
        "stale allowed": [*stale, f"output={out}/allowed.csv", "allow_stale=true"],
        "allow_stale not a bool": [*DATA, f"output={out}/x.csv", "allow_stale=maybe"],
    }
    with ThreadPoolExecutor(3) as pool:
        done = dict(zip(cases, pool.map(lambda args: run_cli("forecast.predict", *args, cwd=folder), cases.values())))
    return done, out


@pytest.mark.parametrize(
    "case, needles",
    [
        ("no such folder", ["error: output=/nonexistent/dir/f.csv: the folder /nonexistent/dir does not exist"]),
        ("a file as folder", ["a-file does not exist; create it or choose another output"]),
        ("a folder as output", ["name the CSV file to write"]),
        ("allow_stale not a bool", ["allow_stale='maybe': give true or false"]),
    ],
)
def test_a_bad_predict_setting_is_refused_up_front(predicted, case, needles):
    done, out = predicted
    assert_clean(done[case], 2, *needles)


def test_an_unwritable_output_folder_is_refused_up_front(champion, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: every folder is writable to root, so there is nothing to refuse")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    done = run_cli("forecast.predict", *DATA, f"output={locked}/f.csv", cwd=champion[0])
    assert_clean(done, 2, f"output={locked}/f.csv: {locked} is not writable")


def test_a_sensor_whose_latest_readings_are_missing_is_an_error_naming_it(predicted):
    done, out = predicted
    assert_clean(
        done["stale sensor"],
        2,
        "the data ends at 2025-03-09 11:30:00 but power_kw (last reading 2025-03-09 01:30:00) stopped earlier",
        "set allow_stale=true to forecast from 2025-03-09 01:30:00",
    )
    assert not (out / "stale.csv").exists()


def test_allow_stale_forecasts_from_the_earlier_origin_and_says_so(predicted):
    done, out = predicted
    assert_clean(done["stale allowed"], 0)
    assert "after the reading of 2025-03-09 01:30:00 (allow_stale: the data ends at 2025-03-09 11:30:00" in done["stale allowed"].stdout
    written = pd.read_csv(out / "allowed.csv", parse_dates=["last_reading", "timestamp"])
    assert (written["last_reading"] == pd.Timestamp("2025-03-09 01:30")).all()
    assert written["timestamp"].iloc[0] == pd.Timestamp("2025-03-09 02:00")


# --- 5. settings are checked before any data is read or run created


# training settings that training.check_settings refuses: checked in-process (the command runs it before
# anything else; "segment longer than the lookback" below shows the command's exit for the same check)
SETTINGS_REFUSED = {
    "no epoch": ([*TINY[:-1], "trainer.max_epochs=0"], "trainer.max_epochs=0"),
    "negative patience": ([*TINY, "patience=-1"], "patience=-1"),
    "zero learning rate": ([*TINY, "model.lr=0"], "model.lr must be a positive finite number, got 0"),
    "negative weight decay": ([*TINY, "model.weight_decay=-1"], "model.weight_decay must be zero or a positive"),
    "negative clipping": ([*TINY, "trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1"),
}


@pytest.mark.parametrize("case", SETTINGS_REFUSED)
def test_a_bad_training_setting_is_refused_by_the_first_check(case):
    args, needle = SETTINGS_REFUSED[case]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=args)
    with pytest.raises(InputError) as raised:
        training.check_settings(cfg)
    assert needle in str(raised.value)


REFUSED = {  # command, arguments -> what the message names
    "segment longer than the lookback": (
        "forecast.train",
        [*TINY, "model.segment_len=96"],
        ["model.segment_len=96 is longer than data.lookback=48", "Set model.segment_len to at most 48"],
    ),
    "unknown precision": ("forecast.train", [*TINY, "trainer.precision=17"], ["bad setting in lightning.Trainer", "17"]),
    "retrain margin": ("forecast.retrain", [*RETRAIN, "margin=1.5"], ["margin=1.5 must be in [0, 1)"]),
    "retrain metric": ("forecast.retrain", [*RETRAIN, "metric=r2"], ["metric=r2 one of mse_scaled"]),
    "retrain challenger setting": (
        "forecast.retrain",
        with_train_args('["model.segment_len=96"]'),
        ["model.segment_len=96 is longer than data.lookback=48"],
    ),
    "retrain unknown train_args key": (
        "forecast.retrain",
        with_train_args('["model.depth=3"]'),
        ["challenger gru with train_args=['model.depth=3']"],
    ),
    "compare segment": (
        "forecast.compare",
        [*TINY, "model.segment_len=96", "seeds=1"],
        ["model.segment_len=96 is longer than data.lookback=48"],
    ),
    "compare learning rate": ("forecast.compare", [*TINY, "model.lr=-1", "seeds=1"], ["model.lr must be a positive finite number, got -1"]),
    "schedule max_runs": ("forecast.schedule", ["max_runs=0", "jobstore=sqlite:///schedule.db"], ["max_runs=0"]),
}


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """Every case of REFUSED, run concurrently, each in its own folder (with drops/ for the retrains): name -> (process, folder).

    "twice at once" is two trainings started together in one folder (refused too, after Hydra made their output folders).
    """
    folders = {}
    for name in [*REFUSED, "twice at once"]:
        folders[name] = tmp_path_factory.mktemp("refused")
        sample_drop(folders[name] / "drops", "day1.csv", slice(0, 3000))
    twice = [popen("forecast.train", *TINY, "model.segment_len=96", cwd=folders["twice at once"]) for _ in range(2)]

    def run(name):
        module, args, _ = REFUSED[name]
        return run_cli(module, *args, cwd=folders[name])

    with ThreadPoolExecutor(4) as pool:
        done = dict(zip(REFUSED, pool.map(run, REFUSED)))
    for p in twice:
        p.communicate(timeout=300)
    return {name: (done[name], folders[name]) for name in REFUSED} | {"twice at once": (twice, folders["twice at once"])}


@pytest.mark.parametrize("case", REFUSED)
def test_a_bad_setting_is_refused_before_any_data_is_read_or_run_created(refused, case):
    done, folder = refused[case]
    assert_clean(done, 2, *REFUSED[case][2])
    assert all_runs(folder) == [] and versions(folder) == []
    assert "rows every" not in done.stdout  # the data report: no data was read


# --- 7. each training its own folder


def test_two_trainings_started_in_the_same_second_write_separate_output_folders(refused):
    processes, folder = refused["twice at once"]
    assert [p.returncode for p in processes] == [2, 2]
    folders = sorted(folder.glob("outputs/*/*"))
    assert len(folders) == 2, folders
    assert sorted(int(f.name.rsplit("-", 1)[1]) for f in folders) == sorted(p.pid for p in processes)
