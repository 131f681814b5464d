"""MLflow tracking: where runs go, what a run records, and the per-epoch logging callback.

The store is `MLFLOW_TRACKING_URI` when set, else the embedded SQLite store `sqlite:///mlflow.db`
in the working directory with artifacts under `./mlruns`. Only the rank-zero process of a
(distributed) training talks to MLflow, so one training is always one run.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import socket
import statistics
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_only
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from forecast.errors import InputError, Interrupted, JobFailed, held

DEFAULT_URI = "sqlite:///mlflow.db"
# MLflow 3's UI opens an experiment in its GenAI view (traces, token usage) unless this tag marks it as
# model training ("Machine learning" in the UI's experiment-type switch; the values are in its own code)
KIND_TAG, TRAINING = "mlflow.experimentKind", "custom_model_development"
DESCRIPTION = "mlflow.note.content"  # a run's description, shown (as Markdown) at the top of its page


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def is_rank_zero() -> bool:
    return rank_zero_only.rank == 0


def connect(experiment: str) -> str:
    """Point MLflow at the store, check it answers, and return the experiment id.

    The experiment is created, or tagged if it lacks the tag, as a model-training experiment, so the
    UI opens it on its runs.
    """
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise InputError(f"cannot reach the MLflow tracking server at {uri} ({reason}); start it or fix MLFLOW_TRACKING_URI") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise InputError(f"tracking store {uri}: folder {folder} does not exist; create it or fix MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        with taking_turns(uri):  # two commands started together on a new store: one creates it, then the other reads it
            found = mlflow.get_experiment_by_name(experiment)
            if found is None:
                artifacts = Path("mlruns").resolve().as_uri() if uri == DEFAULT_URI else None
                return mlflow.create_experiment(experiment, artifact_location=artifacts, tags={KIND_TAG: TRAINING})
            if KIND_TAG not in found.tags:  # made by an older version, or by hand
                mlflow.MlflowClient(uri).set_experiment_tag(found.experiment_id, KIND_TAG, TRAINING)
            return found.experiment_id
    except MlflowException as e:
        first = str(e).strip().splitlines()[0][:200]
        raise InputError(f"tracking store {uri} cannot be used: {first}") from None


@contextlib.contextmanager
def taking_turns(uri: str):
    """For an SQLite database (the tracking store, an Optuna study), one process at a time in the block.

    Opening a new SQLite store creates its tables; two processes doing it at once fail ("duplicate
    column"), as do two creating the same experiment. A blocking `flock` on the database's folder
    makes them take turns; the kernel drops it when a process dies, so nothing stale is left.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    folder = os.open(Path(uri.removeprefix("sqlite:///")).resolve().parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the lock


@contextlib.contextmanager
def start_run(experiment_id: str, name: str, tags: dict[str, str], run_id: str | None = None):
    """An MLflow run on rank zero (ended FAILED or KILLED if the block raises), nothing elsewhere.

    run_id: resume that run instead (python -m forecast.tune continuing its study); `tags` are set on it.
    """
    if not is_rank_zero():
        yield None
        return
    started = mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags)
    with started as run:
        if run_id:
            mlflow.set_tags(tags)
        try:
            yield run
        except (Interrupted, KeyboardInterrupt) as e:  # a signal: KILLED here, before MLflow's own exit marks it FAILED
            mlflow.end_run("KILLED")
            if isinstance(e, Interrupted):
                e.killed.append(run.info.run_id)
            raise


def ui_hint(experiment_id: str) -> str:
    """How to open the experiment in the MLflow UI on its training runs.

    MLflow 3.17's UI picks its view with the sidebar switch "GenAI | Model training", which starts on
    GenAI in a new browser and is remembered there; it ignores the experiment's kind tag while that
    switch exists. A link that says workflowType=machine_learning opens the runs table directly.
    """
    uri, page = tracking_uri(), f"#/experiments/{experiment_id}?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"open the UI: {uri.rstrip('/')}/{page}"
    return f"open the UI: mlflow ui --backend-store-uri {uri}, then http://127.0.0.1:5000/{page}"


def describe(client: mlflow.MlflowClient, run_id: str, text: str) -> None:
    """Set a run's description (Markdown), which the UI shows at the top of the run's page."""
    client.set_tag(run_id, DESCRIPTION, text)


def comparison_run(client: MlflowClient, parent_id: str):
    """The parent run of a comparison (python -m forecast.compare printed its id); InputError if it is none."""
    try:
        parent = client.get_run(parent_id)
    except MlflowException:
        raise InputError(f"no run {parent_id} in the tracking store {tracking_uri()}; check the id or MLFLOW_TRACKING_URI") from None
    if parent.data.tags.get("kind") != "comparison":
        raise InputError(
            f"run {parent_id} is not a comparison (no tag kind=comparison); pass the parent run id that forecast.compare printed"
        )
    return parent


def finite(metrics: dict[str, float], what: str) -> dict[str, float]:
    """`metrics`, unchanged, when every value is finite; else JobFailed naming the first non-finite ones.

    Called before anything is logged as a run's result, so no run ends FINISHED with NaN or inf.
    """
    bad = {k: v for k, v in metrics.items() if not math.isfinite(float(v))}
    if bad:
        shown = ", ".join(f"{k}={v}" for k, v in list(bad.items())[:4])
        raise JobFailed(f"{what}: {shown} is not finite; nothing was logged as a model or registered")
    return metrics


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as `a.b.c -> value` params."""
    out: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


class EpochLog(Callback):
    """Times every training epoch and logs `train/loss` and `val/loss` per epoch to the active run."""

    def __init__(self):
        self.epoch_s: list[float] = []  # wall time of each epoch, validation included
        self.train_s: list[float] = []  # the same without validation
        self.val_loss: list[float] = []
        self._val = 0.0

    def on_train_epoch_start(self, trainer, module) -> None:
        self._start, self._val = time.perf_counter(), 0.0

    def on_validation_epoch_start(self, trainer, module) -> None:
        self._val_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, module) -> None:
        self._val += time.perf_counter() - self._val_start

    def on_train_epoch_end(self, trainer, module) -> None:
        elapsed = time.perf_counter() - self._start
        self.epoch_s.append(elapsed)
        self.train_s.append(elapsed - self._val)
        metrics = {k: float(trainer.callback_metrics[k]) for k in ("train/loss", "val/loss") if k in trainer.callback_metrics}
        if "val/loss" in metrics:
            self.val_loss.append(metrics["val/loss"])
        if trainer.is_global_zero:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            print(f"epoch {trainer.current_epoch + 1:>3}: {shown}  ({elapsed:.1f} s)", flush=True)
            if mlflow.active_run() is not None:
                with held():
                    mlflow.log_metrics(metrics, step=trainer.current_epoch)

    def timing(self, train_windows: int) -> dict[str, float]:
        return {
            "time/epoch_s": statistics.median(self.epoch_s),
            "throughput/train_windows_per_s": train_windows / statistics.median(self.train_s),
        }


def mark_dead_runs(client: MlflowClient, experiment_id: str, stale_after_s: float = math.inf) -> None:
    """Set KILLED the runs still RUNNING whose process is gone.

    A process of this host is looked up by the run's `process` tag (host:pid). One of another host
    (a killed Kubernetes pod) cannot be, so a retrain or challenger run RUNNING for longer than
    `stale_after_s` counts as gone too.
    """
    host, now = socket.gethostname(), time.time()
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'"):
        process = run.data.tags.get("process", "")
        where, _, pid = process.rpartition(":")
        if where == host and pid.isdigit() and not alive(int(pid)):
            why = "its process is gone"
        elif run.data.tags.get("kind") in ("retrain", "challenger") and now - run.info.start_time / 1000 > stale_after_s:
            why = f"running for more than stale_after_s={stale_after_s:.0f}"
        else:
            continue
        client.set_terminated(run.info.run_id, "KILLED")
        print(f"marked run {run.info.run_id} ({run.info.run_name}, process {process}) KILLED: {why}")


def alive(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie has exited; its parent just has not reaped it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
