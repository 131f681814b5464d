"""python -m forecast.tune: the search space, the sweep's bookkeeping, pruning, resume, +tuned, a DDP trial.

In-process (fast): the space as Optuna distributions, the settings check, the sweep loop against a
stand-in launcher (pruned, failed and interrupted trials, resume up to the requested count), and one
tiny training stopped by a real pruner. End to end (e2e): a tiny study interrupted with Ctrl-C and
resumed by the same command, its best settings fed back to forecast.train, and one trial under DDP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import REPO, no_running_runs, run_cli, store_runs
from hydra import compose, initialize_config_dir
from hydra.core.utils import JobReturn, JobStatus
from mlflow import MlflowClient
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from forecast import training, tuned, tuning
from forecast.errors import InputError
from forecast.pruning import TrialPruning

TINY = ["data.lookback=48", "data.horizon=24", "model.hidden_size=8", "trainer.accelerator=cpu"]
# a small space every tiny training accepts (segments within the lookback of 48)
SPACE = ["tune.params.data.lookback=null", "tune.params.model.hidden_size=null", "tune.params.model.segment_len='choice(12,24)'"]


def compose_tune(*overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("tune", overrides=list(overrides))


# ---- the search space ---------------------------------------------------------------------------------


def test_sweep_overrides_become_optuna_distributions_and_the_rest_stays_fixed():
    space, fixed = tuning.parse_space(
        ["model.lr=tag(log, interval(0.0003, 0.01))", "model.dropout=interval(0.0, 0.3)", "model.hidden_size=choice(64,128)",
         "model.num_layers=range(1,4)", "data.horizon=24"]
    )  # fmt: skip
    assert space["model.lr"] == FloatDistribution(0.0003, 0.01, log=True)
    assert space["model.dropout"] == FloatDistribution(0.0, 0.3)
    assert space["model.hidden_size"] == CategoricalDistribution([64, 128])
    assert space["model.num_layers"] == IntDistribution(1, 3)
    assert fixed == ["data.horizon=24"]
    with pytest.raises(InputError, match="low < high"):
        tuning.parse_space(["model.lr=tag(log, interval(0, 0.01))"])


def test_the_architectures_share_one_space_and_a_setting_given_on_the_command_line_leaves_it():
    gru, lstm = compose_tune("model=gru"), compose_tune("model=lstm")
    assert gru.tune == lstm.tune
    space = tuning.space_overrides(gru.tune.params, fixed=["model.lr"])
    assert not any(o.startswith("model.lr=") for o in space) and any(o.startswith("model.hidden_size=") for o in space)
    keys = set(tuning.parse_space(space)[0])
    assert {"model.hidden_size", "model.segment_len", "model.dropout", "model.weight_decay", "model.loss", "data.lookback"} <= keys


def test_a_quantile_model_does_not_search_the_loss_it_ignores():
    assert tuning.unused(compose_tune("model.quantiles=[0.1,0.5,0.9]")) == ["model.loss"]
    assert tuning.unused(compose_tune()) == []


def test_a_space_typed_with_shell_quotes_only_reaches_hydra_as_text():
    argv = ["forecast.tune", "tune.params.model.segment_len=choice(12,24)", "tune.params.model.lr='interval(0.1,0.2)'", "model.lr=0.1"]
    assert tuning.quote_space(argv) == [
        "forecast.tune", "tune.params.model.segment_len='choice(12,24)'", "tune.params.model.lr='interval(0.1,0.2)'", "model.lr=0.1"
    ]  # fmt: skip
    compose_tune(*tuning.quote_space(["tune.params.model.segment_len=choice(12,24)"])[0:1])  # Hydra takes it in a single run


def test_a_space_that_allows_an_untrainable_combination_is_refused_up_front():
    cfg = compose_tune(*TINY)
    space, _ = tuning.parse_space(["model.segment_len=choice(12,96)"])
    with pytest.raises(InputError, match="model.segment_len=96 .*longer than data.lookback=48"):
        tuning.check_space(cfg, space)
    with pytest.raises(InputError, match="'model.lrr' is not a setting"):
        tuning.check_space(cfg, tuning.parse_space(["model.lrr=interval(0.1,0.2)"])[0])
    tuning.check_space(cfg, tuning.parse_space(["model.segment_len=choice(12,24)"])[0])  # fine


# ---- the sweep loop, against a stand-in launcher ---------------------------------------------------------


class Launcher:
    """Hydra's launcher as the sweep sees it: each job returns a value, is pruned, fails, or is interrupted."""

    def __init__(self, storage: str, name: str, outcomes: list):
        self.storage, self.name, self.outcomes, self.jobs = storage, name, list(outcomes), []

    def launch(self, jobs, initial_job_idx):
        returns = []
        for job in jobs:
            self.jobs.append(job)
            outcome = self.outcomes.pop(0)
            if outcome == "interrupt":
                raise KeyboardInterrupt
            number = int(job[-1].removeprefix("+trial="))
            if outcome == "pruned":  # what TrialPruning leaves in the study
                study = optuna.load_study(study_name=self.name, storage=self.storage)
                trial = optuna.Trial(study, next(t._trial_id for t in study.trials if t.number == number))
                trial.report(0.9, step=0)
                trial.set_user_attr("pruned_at_epoch", 1)
            ret = JobReturn()
            ret.status, ret.return_value = JobStatus.COMPLETED, (None if outcome == "failed" else outcome)
            returns.append(ret)
        return returns


def run_sweep(tmp_path, outcomes: list, n_trials: int, space=("model.lr=interval(0.001,0.01)",), defaults=None):
    storage, name = f"sqlite:///{tmp_path}/optuna.db", "study"
    launcher = Launcher(storage, name, outcomes)
    sampler = OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": 0})
    pruner = OmegaConf.create({"_target_": "optuna.pruners.NopPruner"})
    arguments = [*space, "data.horizon=24"]
    tuning.sweep(launcher, arguments, n_trials, 1, storage, name, sampler, pruner, "minimize", defaults)
    return optuna.load_study(study_name=name, storage=storage), launcher


def test_the_sweep_tells_each_trial_how_it_ended_and_passes_the_sampled_settings(tmp_path):
    study, launcher = run_sweep(tmp_path, [0.5, "pruned", "failed", 0.4], n_trials=4)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE]
    assert study.best_trial.number == 3 and study.best_value == 0.4
    first = launcher.jobs[0]
    assert first[0] == "data.horizon=24" and first[1].startswith("model.lr=") and first[-1] == "+trial=0"
    assert 0.001 <= float(first[1].split("=")[1]) <= 0.01


def test_a_new_study_tries_the_configured_settings_first_where_the_space_holds_them(tmp_path):
    defaults = OmegaConf.create({"model": {"lr": 0.003, "segment_len": 48, "loss": "mae"}, "data": {"horizon": 24}})
    space = ["model.lr=interval(0.001,0.01)", "model.segment_len=choice(12,24)", "model.loss=choice(mse,mae)"]
    study, launcher = run_sweep(tmp_path, [0.5, 0.4], n_trials=2, space=space, defaults=defaults)
    first, second = launcher.jobs
    assert "model.lr=0.003" in first and "model.loss=mae" in first  # the defaults, where the space holds them
    assert any(o in first for o in ("model.segment_len=12", "model.segment_len=24"))  # 48 is outside: sampled
    assert "model.lr=0.003" not in second
    study, launcher = run_sweep(tmp_path, [0.3], n_trials=3, space=space, defaults=defaults)  # resumed: not enqueued again
    assert "model.lr=0.003" not in launcher.jobs[0] and len(study.trials) == 3


def test_an_interrupted_sweep_resumes_up_to_the_requested_count(tmp_path):
    with pytest.raises(SystemExit) as stopped:  # Ctrl-C during the second trial: exit 130
        run_sweep(tmp_path, [0.5, "interrupt"], n_trials=3)
    assert stopped.value.code == 130
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL] and study.trials[1].user_attrs[tuning.INTERRUPTED]
    study, launcher = run_sweep(tmp_path, [0.3, 0.6], n_trials=3)  # the same command again: two more, not three
    assert len(launcher.jobs) == 2 and len(tuning.counted(study)) == 3 and study.best_value == 0.3


# ---- pruning inside a real (tiny) training --------------------------------------------------------------


def test_a_trial_the_pruner_stops_ends_after_its_first_epoch_recorded_as_pruned(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    storage = f"sqlite:///{tmp_path}/optuna.db"
    optuna.create_study(study_name="s", storage=storage).ask()  # trial 0, as the sweep asks it
    sweeper = OmegaConf.create(
        {"study_name": "s", "storage": storage, "pruner": {"_target_": "optuna.pruners.ThresholdPruner", "upper": 0.0}}
    )  # every reported loss is above 0: pruned at the first epoch
    pruning = TrialPruning(0, sweeper)
    cfg = compose_tune(*TINY, "trainer.max_epochs=2", "+trial=0")
    best = training.train(cfg, tmp_path / "out", "test", [pruning])
    assert pruning.pruned_at == 1
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("forecast").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["trial_state"] == "PRUNED"
    assert run.data.metrics["val/best_loss"] == pytest.approx(best) and not any(k.startswith("test/") for k in run.data.metrics)
    stored = optuna.load_study(study_name="s", storage=storage).trials[0]
    assert stored.user_attrs == {"run_id": run.info.run_id, "pruned_at_epoch": 1} and stored.intermediate_values == {0: pytest.approx(best)}


# ---- end to end ------------------------------------------------------------------------------------------


def popen_tune(*args: str, cwd) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    env |= {"MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "forecast.tune", *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """`forecast.tune trials=2`, stopped by Ctrl-C once its first trial is done, then the same command again."""
    folder = tmp_path_factory.mktemp("tune")
    args = ["trials=2", *TINY, "trainer.max_epochs=1", *SPACE]
    process, seen, deadline = popen_tune(*args, cwd=folder), [], time.monotonic() + 240
    for line in process.stdout:
        seen.append(line)
        if line.startswith("trial 0:") or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    first = subprocess.CompletedProcess(process.args, process.returncode, "".join(seen) + out, err)
    second = run_cli("forecast.tune", *args, cwd=folder)
    return folder, first, second


@pytest.mark.e2e
def test_ctrl_c_marks_the_tune_run_killed_and_the_same_command_resumes_its_study(resumed):
    folder, first, second = resumed
    assert first.returncode == 130, first.stdout[-2000:] + first.stderr[-2000:]
    assert "Traceback" not in first.stderr and "marked KILLED" in first.stderr
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert "resuming gru on sample" in second.stdout and "1 of 2 trials done" in second.stdout
    client, runs = store_runs(folder)
    (parent,) = [r for r in runs if r.data.tags.get("kind") == "tune"]
    assert parent.info.status == "FINISHED" and parent.info.run_id in first.stdout  # one parent, resumed
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.status for r in trials)[-2:] == ["FINISHED", "FINISHED"]
    assert parent.data.metrics["tune/trials"] == 2 and parent.data.metrics["tune/fit_s_total"] > 0
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)} | {
        a.path for a in client.list_artifacts(parent.info.run_id, "plots")
    }  # fmt: skip
    assert {"tuned.yaml", "trials.parquet", "trials.csv", "plots/history.png"} <= artifacts
    assert "importances.json" in artifacts or "importances.txt" in artifacts
    assert no_running_runs(folder)


@pytest.mark.e2e
def test_the_best_settings_feed_back_into_a_training_and_the_command_line_wins(resumed, monkeypatch):
    folder, _, second = resumed
    run_id = second.stdout.split("+tuned=")[1].split()[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")
    best = tuned.settings(run_id)
    segment = next(o for o in best["overrides"] if o.startswith("model.segment_len="))
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        task = ["model=gru", f"+tuned={run_id}", "data.horizon=12"]  # the tuned model again: its tuned model.* stay
        cfg = tuned.compose(compose("train", overrides=task), task)
    assert cfg.model.segment_len == int(segment.split("=")[1]) and cfg.data.lookback == 48  # tuned
    assert cfg.data.horizon == 12  # the command line wins over the tuned data.horizon=24
    with pytest.raises(InputError, match="not a tuning"):
        tuned.settings(next(r.info.run_id for r in store_runs(folder)[1] if r.data.tags.get("kind") != "tune"))


@pytest.mark.e2e
def test_one_trial_under_ddp_with_two_cpu_processes_is_one_run(tmp_path):
    done = run_cli("forecast.tune", "trials=1", "trainer=ddp", "trainer.devices=2", *TINY, "trainer.max_epochs=1", *SPACE, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    _, runs = store_runs(tmp_path)
    assert sorted(r.data.tags.get("kind", "trial") for r in runs) == ["trial", "tune"]  # rank 1 neither records nor sweeps
    trial = next(r for r in runs if r.data.tags.get("kind") != "tune")
    assert trial.info.status == "FINISHED" and trial.data.params["trainer.strategy"] == "ddp"
    name = next(r.data.tags["study"] for r in runs if r.data.tags.get("kind") == "tune")
    (only,) = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert only.state == TrialState.COMPLETE and only.user_attrs["run_id"] == trial.info.run_id


@pytest.mark.e2e
def test_a_tuned_comparison_tunes_each_architecture_alike_then_trains_its_seeds_at_the_best_settings(tmp_path):
    done = run_cli("forecast.compare", "budget=tuned", "trials=2", "seeds=1", *TINY, "trainer.max_epochs=1", *SPACE, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    if (os.cpu_count() or 1) >= 2:  # threads=1: the two tunings ran side by side, their lines prefixed
        assert "[gru] trial 0 tries the configured settings first" in done.stdout and "[lstm] trial 1:" in done.stdout
    _, runs = store_runs(tmp_path)
    (comparison,) = [r for r in runs if r.data.tags.get("kind") == "comparison"]
    tunes = {r.data.tags["architecture"]: r for r in runs if r.data.tags.get("kind") == "tune"}
    assert set(tunes) == {"gru", "lstm"} and all(t.data.tags["comparison"] == comparison.info.run_id for t in tunes.values())
    assert all(t.data.metrics["tune/trials"] == 2 for t in tunes.values())
    seeds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == comparison.info.run_id]
    assert sorted(r.data.params["tuned"] for r in seeds) == sorted(t.info.run_id for t in tunes.values())
    report = next((tmp_path / "reports" / comparison.info.run_id).glob("report.md")).read_text()
    assert "## Tuning (budget=tuned)" in report and all(t.info.run_id[:8] in report for t in tunes.values())
    assert no_running_runs(tmp_path)
