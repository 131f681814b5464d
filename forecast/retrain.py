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
6. the alias moves to the best challenger only when it beats repeating the last value on the
   holdout (`baseline/<metric>`) and the champion by `margin` (relative); with no champion yet, or
   one that cannot be scored on this data (or scores NaN), the best such challenger replaces it
   and the `reason` tag says why. A challenger whose score is not finite is left out. A run tagged
   kind=retrain records the decision, every contender's (finite) metrics, the baseline's and the
   data hash; the challengers' runs are its children.
7. on a fleet (data=fleet) every contender is scored on every device's holdout windows
   (forecast/promotion_fleet.py): the decision uses the fleet-wide scores, and the devices where a
   challenger that wins on average loses badly (per-device metric above `per_device_loss_ratio` x
   the champion's, or the baseline's without one) are printed and recorded on the retrain run.

Exit status: 0 a decision was made; 1 a challenger failed or scored non-finite (the decision among
the others stands); 2 bad data or settings (nothing trained or changed); 3 another retrain holds
the lock; 130 / 143 SIGINT / SIGTERM (the retrain run and the training under way end KILLED).
Settings: conf/retrain.yaml.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hydra
import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from mlflow import MlflowClient
from omegaconf import DictConfig

from forecast import config, predict_fleet, promotion_fleet, tracking, training
from forecast.errors import InputError, Interrupted, reported
from forecast.lock import Busy, exclusive, lock_path
from forecast.promotion import Contender, Holdout, decide, find_champion, promote, record, snapshot

config.register_resolvers()

BUSY = 3
METRICS = ("mse_scaled", "mae_scaled", "mae", "rmse", "crps")


@hydra.main(version_base="1.3", config_path="../conf", config_name="retrain")
def main(cfg: DictConfig) -> None:
    try:
        with reported():  # SIGINT/SIGTERM: the retrain run ends KILLED, exit 130/143
            sys.exit(retrain(cfg))
    except Busy as e:
        print(f"skipped: {e}", file=sys.stderr)
        sys.exit(BUSY)


def retrain(cfg: DictConfig) -> int:
    """One retrain; returns the exit status."""
    started = time.perf_counter()
    check_settings(cfg)
    experiment_id = tracking.connect(cfg.experiment)
    client = MlflowClient()
    with exclusive(lock_path(cfg.lock)):
        tracking.mark_dead_runs(client, experiment_id, cfg.stale_after_s)
        data = config.build(cfg.data)  # validates as training does; bad data stops here
        print(*data.report.lines(), sep="\n")
        fleet = predict_fleet.is_fleet(cfg.data)
        report = data.report.data if fleet else data.report  # a fleet's reading totals (files, rows, end)
        champion = find_champion(client, cfg.name, cfg.alias)
        with tempfile.TemporaryDirectory(prefix="forecast-retrain-") as folder:
            per_device_files = fleet and Path(str(cfg.data.path)).is_dir()  # a folder of one file per device: names are ids
            digest = snapshot(report.files, Path(folder), keep_names=per_device_files)
            path = folder if per_device_files or not fleet else f"{folder}/*.csv"  # a long fleet file is not a folder of devices
            print(f"snapshot: {len(report.files)} file(s), {report.rows:,} rows to {report.end}, sha256 {digest[:16]}")
            holdout = promotion_fleet.FleetHoldout(data, cfg.metric) if fleet else Holdout(data, champion)
            scores = {"baseline": holdout.baseline()}
            if champion:
                scores["champion"] = holdout.score("champion", champion)
            tags = {
                "kind": "retrain",
                "dataset": data.name,
                "data_sha256": digest,
                "process": f"{socket.gethostname()}:{os.getpid()}",
                "command": " ".join(["python -m forecast.retrain", *HydraConfig.get().overrides.task]),
                "champion_before": champion.label if champion else "none",
            }
            with tracking.start_run(experiment_id, f"retrain-{data.name}", tags) as run:
                mlflow.log_params(
                    {
                        "name": cfg.name,
                        "challengers": ",".join(cfg.challengers),
                        "metric": cfg.metric,
                        "margin": cfg.margin,
                        "data.path": str(cfg.data.path),
                        "data.rows": report.rows,
                        "data.end": report.end,
                        "holdout.windows": len(holdout.origins),
                        "warm_start": cfg.warm_start,
                    }
                )
                contenders = {"champion": champion} if champion else {}
                failed = []
                for name in cfg.challengers:
                    version = train_challenger(cfg, name, path, run.info.run_id, champion, client, experiment_id)
                    if version is None:
                        failed.append(name)
                        continue
                    contenders[name] = version
                    scores[name] = holdout.score(name, version)
                challengers = {
                    k: (s[cfg.metric] if isinstance(s, dict) else math.nan) for k, s in scores.items() if k not in ("baseline", "champion")
                }
                failed += [k for k, v in challengers.items() if not math.isfinite(v)]  # trained, but cannot forecast the holdout
                before = scores.get("champion")
                decision = decide(
                    challengers,
                    scores["baseline"][cfg.metric],
                    cfg.margin,
                    cfg.metric,
                    champion=None if champion is None else before if isinstance(before, str) else before[cfg.metric],
                )
                for name, why in decision.left_out.items():
                    print(f"left out {name}: {why}")
                if decision.winner is not None:
                    decision.winner, decision.reason = promote(
                        client, cfg, decision.winner, contenders[decision.winner], champion, decision.reason
                    )
                if fleet:
                    promotion_fleet.report_losses(holdout, scores, cfg.metric, cfg.per_device_loss_ratio)
                record(scores, contenders, decision, failed)
    winner = decision.winner
    after = contenders[winner] if winner else champion
    kept = f"keep {champion.label} ({champion.architecture})" if champion else "no champion"
    print(f"decision: {f'promote {after.label} ({after.architecture})' if winner else kept}: {decision.reason}")
    print(f"retrain run {run.info.run_id} in {time.perf_counter() - started:.1f} s")
    return 1 if failed else 0


def check_settings(cfg: DictConfig) -> None:
    """Refuse bad retrain settings, and each challenger's training settings, before the lock is taken or data read."""
    if not (isinstance(cfg.margin, (int, float)) and 0 <= cfg.margin < 1) or cfg.metric not in METRICS:
        raise InputError(f"margin={cfg.margin} must be in [0, 1) and metric={cfg.metric} one of {', '.join(METRICS)}")
    ratio = cfg.get("per_device_loss_ratio")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 1 <= ratio < math.inf:
        raise InputError(
            f"per_device_loss_ratio={ratio}: give a number of 1 or more (a device is lost badly above that many times the champion's error)"
        )
    if any(config.override_key(str(o)).startswith("data") for o in cfg.train_args):
        raise InputError(
            "data settings go on the command line (data.lookback=...), not in train_args: every contender must see the same data"
        )
    passed = config.overrides_under(list(HydraConfig.get().overrides.task), "data")
    for name in cfg.challengers:
        try:
            composed = hydra.compose("train", overrides=[f"model={name}", *passed, *[str(a) for a in cfg.train_args]])
        except (ConfigCompositionException, OverrideParseException, MissingConfigException) as e:
            raise InputError(f"challenger {name} with train_args={list(cfg.train_args)}: {str(e).splitlines()[0]}") from None
        training.check_settings(composed)


# --- challengers and the decision


def train_challenger(
    cfg: DictConfig, name: str, path: str, parent: str, champion: Contender | None, client: MlflowClient, experiment_id: str
) -> Contender | None:
    """Train and register one challenger on the snapshot at `path` in a child process; its version, or None if it failed."""
    passed = config.overrides_under(list(HydraConfig.get().overrides.task), "data", exclude=("data.path",))
    command = [
        sys.executable,
        "-m",
        "forecast.train",
        f"model={name}",
        *passed,
        f"data.path={path}",
        f"tracking.register={cfg.name}",
        f"tracking.experiment={cfg.experiment}",
        f"tracking.parent={parent}",
        "+tracking.tags.kind=challenger",
        f"+tracking.tags.challenger={name}",
        *cfg.train_args,
    ]
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
    except Interrupted as e:  # pass the signal on: the training ends its own run KILLED
        child.send_signal(e.signum)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
        raise
    took = time.perf_counter() - started
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}' and tags.challenger = '{name}'")
    registered = runs[0].data.tags.get("registered_model") if runs and runs[0].info.status == "FINISHED" else None
    if code != 0 or registered is None:
        why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        print(f"challenger {name} failed ({why}) after {took:.0f} s; it is left out")
        tracking.mark_dead_runs(client, experiment_id)
        return None
    print(f"challenger {name}: {registered} in {took:.0f} s")
    return Contender(client, *registered.split("/"))


def _die_with_parent() -> None:
    """In the child, before exec: Linux kills it when the retrain process dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


if __name__ == "__main__":
    main()
