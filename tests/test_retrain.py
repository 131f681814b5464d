"""python -m forecast.retrain as a scheduler runs it: promotion, non-promotion and every fault of issue 5.

The first retrain (the session's `champion` fixture) promotes directly. The second, on grown data,
is forced to keep the champion with margin=0.99 (a challenger would need a 99% lower error), so
the outcome does not hang on how well a one-epoch model happens to train; `decide` is tested on
both sides of the margin without training.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import RETRAIN, run_cli, sample_drop
from mlflow import MlflowClient

pytestmark = pytest.mark.e2e  # runs the commands as subprocesses, as a user does


def store(folder):
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    return client, client.get_experiment_by_name("forecast").experiment_id


def registry(folder) -> tuple[str, list[str]]:
    """The champion version and every registered version."""
    client, _ = store(folder)
    model = client.get_registered_model("forecast")
    return str(model.aliases["champion"]), sorted(str(v.version) for v in client.search_model_versions("name = 'forecast'"))


def runs(folder, where=""):
    client, experiment = store(folder)
    return client.search_runs([experiment], where)


def settings(**changed) -> list[str]:
    """RETRAIN with some settings replaced (Hydra refuses the same key twice)."""
    return [a for a in RETRAIN if a.split("=")[0] not in changed] + [f"{k}={v}" for k, v in changed.items()]


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts: it has exited, its parent just has not reaped it)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def data_copy(folder, name):
    """A copy of the champion's drops folder, to grow or spoil without touching the shared one."""
    shutil.copytree(folder / "drops", folder / name, dirs_exist_ok=True)
    return settings(**{"data.path": name})


def test_first_retrain_promotes_the_best_challenger_and_records_it(champion):
    folder, done = champion
    assert "champion: none yet" in done.stdout
    assert "decision: promote forecast/1 (gru): no champion yet" in done.stdout
    assert registry(folder) == ("1", ["1"])
    (retrain,) = runs(folder, "tags.kind = 'retrain' and tags.champion_before = 'none'")
    tags, metrics = retrain.data.tags, retrain.data.metrics
    assert tags["decision"] == "promote" and tags["champion_after"] == "forecast/1" and len(tags["data_sha256"]) == 64
    assert {"gru/mse_scaled", "gru/mae_scaled", "gru/mae", "gru/rmse"} <= set(metrics)
    (child,) = runs(folder, f"tags.mlflow.parentRunId = '{retrain.info.run_id}'")
    assert child.data.tags["kind"] == "challenger" and child.data.tags["registered_model"] == "forecast/1"
    # the holdout is the training's test span, scaled the same way: the two scores agree
    assert metrics["gru/mse_scaled"] == pytest.approx(child.data.metrics["test/mse_scaled"], rel=1e-5)


def test_second_retrain_on_grown_data_keeps_the_champion_inside_the_margin(champion):
    folder, _ = champion
    args = data_copy(folder, "grown")
    sample_drop(folder / "grown", "day2.csv", slice(3000, 3600))
    before, versions = registry(folder)
    done = run_cli("forecast.retrain", *args, "margin=0.99", cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"decision: keep forecast/{before}" in done.stdout and "margin of 99.0%" in done.stdout
    after, versions_after = registry(folder)
    assert after == before and len(versions_after) == len(versions) + 1  # registered, not promoted
    last = runs(folder, "tags.kind = 'retrain'")[0]
    assert last.data.tags["decision"] == "keep" and {"champion/mse_scaled", "gru/mse_scaled"} <= set(last.data.metrics)
    first = runs(folder, "tags.kind = 'retrain' and tags.champion_before = 'none'")[0]
    assert last.data.tags["data_sha256"] != first.data.tags["data_sha256"]  # a new snapshot
    assert "holdout: 697 windows" in done.stdout  # the last 20% of 3,600 rows


def test_bad_new_data_changes_nothing(champion):
    folder, _ = champion
    args = data_copy(folder, "spoilt")
    bad = sample_drop(folder / "spoilt", "day2.csv", slice(3000, 3100))
    lines = bad.read_text().splitlines()
    lines[10] = lines[10].rsplit(",", 1)[0] + ",abc"  # a broken export
    bad.write_text("\n".join(lines) + "\n")
    before, count = registry(folder), len(runs(folder))
    done = run_cli("forecast.retrain", *args, cwd=folder)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    message = done.stderr.strip().splitlines()
    assert 1 <= len(message) <= 2 and message[0].startswith("error: ") and "day2.csv' line 11, column 'power_kw'" in message[0]
    assert registry(folder) == before and len(runs(folder)) == count  # no run, no version, same champion


def start_retrain(folder, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    env |= {"MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "forecast.retrain", *args], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def read_until(process, text: str, seen: list[str], timeout: float = 120) -> str:
    """Lines of `process` up to the first that contains `text`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return line
    process.kill()
    pytest.fail(f"no line with {text!r}; output:\n{''.join(seen)[-3000:]}")


LONG = settings(train_args='["model.hidden_size=32","trainer.max_epochs=100","patience=100"]')  # trains until killed


def test_a_training_killed_mid_way_leaves_the_champion(champion):
    folder, _ = champion
    before = registry(folder)
    retrain, seen = start_retrain(folder, *LONG), []
    pid = int(read_until(retrain, "training gru: pid", seen).split()[-1])
    read_until(retrain, "epoch   1:", seen)
    os.kill(pid, signal.SIGKILL)  # kill -9 the training
    out = "".join(seen) + retrain.communicate(timeout=120)[0]
    assert retrain.returncode == 1, out[-3000:]
    assert "challenger gru failed (killed by signal 9)" in out and "decision: keep" in out
    assert "KILLED: its process is gone" in out  # its run is not left RUNNING
    assert registry(folder) == before
    assert not runs(folder, "attributes.status = 'RUNNING'")


def test_the_lock_admits_one_retrain_and_a_kill_9_leaves_nothing_stuck(champion):
    folder, _ = champion
    before = registry(folder)
    first, seen = start_retrain(folder, *LONG), []
    child = int(read_until(first, "training gru: pid", seen).split()[-1])
    second = run_cli("forecast.retrain", *RETRAIN, cwd=folder)  # started while the first holds the lock
    assert second.returncode == 3 and "skipped: another retrain holds" in second.stderr and str(first.pid) in second.stderr
    read_until(first, "epoch   1:", seen)  # its training is mid-way
    first.kill()  # kill -9 the retrain itself
    first.wait(timeout=30)
    first.stdout.close()
    deadline = time.monotonic() + 30
    while not gone(child) and time.monotonic() < deadline:  # its training dies with it
        time.sleep(0.2)
    assert gone(child), "the training outlived its retrain"
    third = run_cli("forecast.retrain", *settings(challengers="[]"), cwd=folder)  # the lock is free again
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stdout.count("KILLED: its process is gone") == 2  # the killed retrain's run and its training's
    assert "(retrain-csv, process " in third.stdout and "(gru-csv, process " in third.stdout
    assert registry(folder) == before
    assert not runs(folder, "attributes.status = 'RUNNING'")


def test_runs_of_another_host_are_marked_killed_only_when_stale(champion):
    from forecast.tracking import mark_dead_runs

    folder, _ = champion
    client, experiment = store(folder)
    ours = client.create_run(experiment, tags={"kind": "retrain", "process": "pod-7f9c:1"}).info.run_id  # a killed pod's
    theirs = client.create_run(experiment, tags={"process": "pod-7f9c:1"}).info.run_id  # someone's training
    mark_dead_runs(client, experiment, stale_after_s=3600)
    assert client.get_run(ours).info.status == "RUNNING"  # another host, and recent: it may be alive
    mark_dead_runs(client, experiment, stale_after_s=0)
    assert client.get_run(ours).info.status == "KILLED" and client.get_run(theirs).info.status == "RUNNING"
    client.set_terminated(theirs, "KILLED")
