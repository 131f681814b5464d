"""python -m forecast.retrain: retrain on the latest data and move the champion only for a better model.

    python -m forecast.retrain                                         # the sample; challengers gru and lstm
    python -m forecast.retrain data=csv data.path=drops/ margin=0.05 'train_args=["trainer.max_epochs=30"]'

In order, under a lock that only one retrain per store can hold:
1. runs left RUNNING by a process of this host that no longer exists (or, from any host, retrain
   runs older than `stale_after_s`) are marked KILLED;
2. the data is read and validated as training reads it, and its files are copied to a snapshot
   (sha256 recorded) that every training of this retrain reads;
3. the champion (models:/<name>@<alias>) is checked against the data and scored on the holdout;
4. each challenger trains in its own process (`python -m forecast.train ... tracking.register=<name>`),
   so a crash or kill -9 there cannot touch this process's state; it only adds a registry version;
5. every contender forecasts the same holdout windows through its pyfunc (its own scaler, its own
   lookback); errors are standardised by this data's scaler, so they compare across models;
6. the alias moves to the best challenger only when it beats the champion by `margin` (relative),
   or when there is no champion yet. A run tagged kind=retrain records the decision, every
   contender's metrics and the data hash; the challengers' runs are its children.

Exit status: 0 a decision was made; 1 a challenger failed (the decision among the others stands);
2 bad data or settings (nothing trained or changed); 3 another retrain holds the lock.
Settings: conf/retrain.yaml.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hydra
import mlflow
import numpy as np
from hydra.core.hydra_config import HydraConfig
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from forecast import evaluate, serving, tracking
from forecast.errors import InputError, reported
from forecast.predict import window_forecasts
from forecast.train import build
from forecast.windows import window_origins

BUSY = 3


class Busy(Exception):
    """Another retrain holds the lock."""


@hydra.main(version_base="1.3", config_path="../conf", config_name="retrain")
def main(cfg: DictConfig) -> None:
    signal.signal(signal.SIGTERM, _interrupt)          # a stopped service ends its run KILLED, not RUNNING
    try:
        with reported():
            sys.exit(retrain(cfg))
    except Busy as e:
        print(f"skipped: {e}", file=sys.stderr)
        sys.exit(BUSY)


def retrain(cfg: DictConfig) -> int:
    """One retrain; returns the exit status."""
    started = time.perf_counter()
    if cfg.margin < 0 or cfg.margin >= 1 or cfg.metric not in ("mse_scaled", "mae_scaled", "mae", "rmse"):
        raise InputError(f"margin={cfg.margin} must be in [0, 1) and metric={cfg.metric} one of mse_scaled, mae_scaled, mae, rmse")
    if any(o.lstrip("+~").startswith("data") for o in cfg.train_args):
        raise InputError("data settings go on the command line (data.lookback=...), not in train_args: every contender must see the same data")
    experiment_id = tracking.connect(cfg.experiment)
    client = MlflowClient()
    with exclusive(lock_path(cfg.lock)):
        mark_dead_runs(client, experiment_id, cfg.stale_after_s)
        data = build(cfg.data)                          # validates as training does; bad data stops here
        print(*data.report.lines(), sep="\n")
        champion = find_champion(client, cfg.name, cfg.alias)
        with tempfile.TemporaryDirectory(prefix="forecast-retrain-") as folder:
            digest = snapshot(data.report.files, Path(folder))
            print(f"snapshot: {len(data.report.files)} file(s), {data.report.rows:,} rows to {data.report.end}, sha256 {digest[:16]}")
            holdout = Holdout(data, champion)
            scores = {"champion": holdout.score("champion", champion)} if champion else {}
            tags = {"kind": "retrain", "dataset": data.name, "data_sha256": digest, "process": f"{socket.gethostname()}:{os.getpid()}",
                    "command": " ".join(["python -m forecast.retrain", *HydraConfig.get().overrides.task]),
                    "champion_before": champion.label if champion else "none"}
            with tracking.start_run(experiment_id, f"retrain-{data.name}", tags) as run:
                mlflow.log_params({"name": cfg.name, "challengers": ",".join(cfg.challengers), "metric": cfg.metric, "margin": cfg.margin,
                                   "data.path": str(cfg.data.path), "data.rows": data.report.rows, "data.end": data.report.end,
                                   "holdout.windows": len(holdout.origins), "warm_start": cfg.warm_start})
                contenders = {"champion": champion} if champion else {}
                failed = []
                for name in cfg.challengers:
                    version = train_challenger(cfg, name, folder, run.info.run_id, champion, client, experiment_id)
                    if version is None:
                        failed.append(name)
                        continue
                    contenders[name] = version
                    scores[name] = holdout.score(name, version)
                winner, reason = decide({k: s[cfg.metric] for k, s in scores.items()}, cfg.margin, cfg.metric)
                if winner is not None:
                    winner, reason = promote(client, cfg, winner, contenders[winner], champion, reason)
                record(scores, contenders, winner, reason, failed)
    after = contenders[winner] if winner else champion
    kept = f"keep {champion.label} ({champion.architecture})" if champion else "no champion"
    print(f"decision: {f'promote {after.label} ({after.architecture})' if winner else kept}: {reason}")
    print(f"retrain run {run.info.run_id} in {time.perf_counter() - started:.1f} s")
    return 1 if failed else 0


# --- the lock and the runs of dead processes


def lock_path(setting: str | None) -> Path:
    """Where the lock file lives: beside the store, which it guards."""
    if setting:
        return Path(setting)
    uri = tracking.tracking_uri()
    if uri == tracking.DEFAULT_URI:
        return Path("mlruns") / "retrain.lock"
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///") + ".retrain.lock")
    return Path("retrain.lock")             # a tracking server: guards this host only


@contextlib.contextmanager
def exclusive(path: Path):
    """Hold an exclusive `flock` on `path` for the block, or raise Busy at once if another process holds it.

    The kernel drops a flock when its process dies, kill -9 included, so no stale lock is left.
    Limits: it guards one host (and a local file system); processes on several hosts sharing a
    tracking server need one scheduler host, or the scheduler's own exclusion (a Kubernetes
    CronJob's concurrencyPolicy: Forbid).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip()
        os.close(fd)
        raise Busy(f"another retrain holds {path} ({holder or 'unknown process'}); nothing was trained or changed") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"process {socket.gethostname()}:{os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    try:
        yield
    finally:
        os.close(fd)


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


def _interrupt(signum, frame):
    raise KeyboardInterrupt


# --- data, contenders and the holdout


def snapshot(files: list[str], folder: Path) -> str:
    """Copy the data files, in reading order, into `folder` (what every training reads); sha256 of them.

    Drops are expected to appear whole (written elsewhere, then moved in): the copy is then
    exactly what was validated.
    """
    digest = hashlib.sha256()
    for i, source in enumerate(files):
        copy = folder / f"{i:05d}-{Path(source).name}{'' if source.lower().endswith('.csv') else '.csv'}"
        shutil.copyfile(source, copy)
        digest.update(Path(source).name.encode() + b"\0" + copy.read_bytes())
    return digest.hexdigest()


class Contender:
    """A registered model version and its loaded forecast wrapper."""

    def __init__(self, client: MlflowClient, name: str, version: str):
        self.name, self.version, self.label = name, str(version), f"{name}/{version}"
        self.uri = f"models:/{name}/{version}"
        mv = client.get_model_version(name, self.version)
        self.run_id = mv.run_id
        self.architecture = client.get_run(mv.run_id).data.tags.get("architecture", "?") if mv.run_id else "?"
        self.model = serving.load(self.uri)[1]


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version `name@alias` points at, or None when the model or the alias does not exist yet."""
    try:
        version = client.get_registered_model(name).aliases.get(alias)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return None if version is None else str(version)


def find_champion(client: MlflowClient, name: str, alias: str) -> Contender | None:
    version = alias_version(client, name, alias)
    if version is None:
        print(f"champion: none yet ({name}@{alias} does not exist); the best challenger will be promoted")
        return None
    champion = Contender(client, name, version)
    print(f"champion: {champion.label} ({champion.architecture})")
    return champion


class Holdout:
    """The most recent span (the data's test span) and its windows, the same for every contender."""

    def __init__(self, data, champion: Contender | None):
        self.data = data
        lookback = data.lookback
        if champion is not None:
            m = champion.model
            champion.model.check(data.frame, data.report.freq, str(data.report.files[-1]))
            if m.horizon != data.horizon or list(m.targets) != data.targets:
                raise InputError(f"the champion {champion.label} forecasts {m.horizon} steps of {', '.join(m.targets)}; this data gives "
                                 f"{data.horizon} steps of {', '.join(data.targets)}.\nSet data.horizon / data.targets to match, "
                                 f"or point the alias by hand (MlflowClient().set_registered_model_alias).")
            lookback = max(lookback, m.lookback)
        valid = ~np.isnan(data.frame[data.inputs].to_numpy()).any(axis=1)
        self.origins = window_origins(data.spans["test"], lookback, data.horizon, valid)
        if len(self.origins) == 0:
            raise InputError(f"the holdout span of {data.report.files[-1]} holds no complete window of lookback {lookback} "
                             f"+ horizon {data.horizon}; wait for more data or lower data.lookback")
        index = data.frame.index
        print(f"holdout: {len(self.origins):,} windows forecasting {index[self.origins[0]]} to {index[self.origins[-1] + data.horizon - 1]}")

    def score(self, role: str, contender: Contender) -> dict[str, float]:
        """The contender's errors on the holdout windows, standardised by this data's scaler."""
        pred, truth = window_forecasts(contender.model, self.data.frame, self.origins)   # [N, H, T] data units
        t = self.data.target_index
        mean, std = self.data.scaler.mean[t], self.data.scaler.std[t]
        scores = evaluate.errors((pred - mean) / std, (truth - mean) / std, self.data.scaler, t)
        print(f"  {role:<10} {contender.label} ({contender.architecture}): " + "  ".join(f"{k} {v:.4g}" for k, v in scores.items()), flush=True)
        return scores


# --- challengers and the decision


def train_challenger(cfg: DictConfig, name: str, folder: str, parent: str, champion: Contender | None,
                     client: MlflowClient, experiment_id: str) -> Contender | None:
    """Train and register one challenger in a child process; its version, or None if it failed."""
    passed = [o for o in HydraConfig.get().overrides.task if o.lstrip("+~").startswith("data") and not o.lstrip("+~").startswith("data.path=")]
    command = [sys.executable, "-m", "forecast.train", f"model={name}", *passed, f"data.path={folder}",
               f"tracking.register={cfg.name}", f"tracking.experiment={cfg.experiment}", f"tracking.parent={parent}",
               "+tracking.tags.kind=challenger", f"+tracking.tags.challenger={name}", *cfg.train_args]
    if cfg.warm_start and champion is not None and champion.architecture == name:
        command.append(f"+init_from={champion.uri}")
    started = time.perf_counter()
    child = subprocess.Popen(command, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    print(f"training {name}: pid {child.pid}", flush=True)
    try:
        code = child.wait(timeout=cfg.train_timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        code = child.wait()
    except KeyboardInterrupt:
        child.kill()
        raise
    took = time.perf_counter() - started
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}' and tags.challenger = '{name}'")
    registered = runs[0].data.tags.get("registered_model") if runs and runs[0].info.status == "FINISHED" else None
    if code != 0 or registered is None:
        why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        print(f"challenger {name} failed ({why}) after {took:.0f} s; it is left out")
        mark_dead_runs(client, experiment_id)
        return None
    print(f"challenger {name}: {registered} in {took:.0f} s")
    return Contender(client, *registered.split("/"))


def _die_with_parent() -> None:
    """In the child, before exec: Linux kills it when the retrain process dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def decide(scores: dict[str, float], margin: float, metric: str = "mse_scaled") -> tuple[str | None, str]:
    """The challenger to promote (None: keep the champion) and why; `scores` may hold "champion"."""
    challengers = {k: v for k, v in scores.items() if k != "champion" and math.isfinite(v)}
    if not challengers:
        return None, "no challenger to judge"
    best = min(challengers, key=challengers.get)
    if "champion" not in scores:
        return best, f"no champion yet; {best} has the lowest {metric} ({challengers[best]:.4g})"
    champion = scores["champion"]
    gain = 1 - challengers[best] / champion if champion > 0 else -math.inf
    versus = f"{metric} {challengers[best]:.4g} vs the champion's {champion:.4g} ({gain:+.1%})"
    if gain > margin:
        return best, f"{best} is better by more than the margin of {margin:.1%}: {versus}"
    return None, f"best challenger {best} is not better by more than the margin of {margin:.1%}: {versus}"


def promote(client: MlflowClient, cfg: DictConfig, name: str, winner: Contender, champion: Contender | None,
            reason: str) -> tuple[str | None, str]:
    """Point the alias at the winner `name`, unless it moved since this retrain read it; who won and why."""
    now = alias_version(client, cfg.name, cfg.alias)
    if now != (champion.version if champion else None):
        return None, f"the alias {cfg.name}@{cfg.alias} moved to version {now} during this retrain; left as it is"
    client.set_registered_model_alias(cfg.name, cfg.alias, winner.version)
    client.set_model_version_tag(cfg.name, winner.version, "promoted_by_run", mlflow.active_run().info.run_id)
    return name, reason


def record(scores: dict[str, dict], contenders: dict[str, Contender], winner: str | None, reason: str, failed: list[str]) -> None:
    """The decision as tags, every contender's holdout metrics (`<contender>/<metric>`) and contenders.json, on the retrain run."""
    after = contenders[winner] if winner else contenders.get("champion")
    mlflow.set_tags({"decision": "promote" if winner else "keep", "reason": reason, "failed": ",".join(failed),
                     "champion_after": after.label if after else "none"})
    mlflow.log_metrics({f"{who}/{k}": v for who, s in scores.items() for k, v in s.items()})
    mlflow.log_dict({who: {"model": c.label, "architecture": c.architecture, "run_id": c.run_id, **scores[who]}
                     for who, c in contenders.items()} | {"failed": failed, "winner": winner, "reason": reason}, "contenders.json")

if __name__ == "__main__":
    main()
