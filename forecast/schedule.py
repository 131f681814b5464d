"""python -m forecast.schedule: run the retraining on a cron schedule with APScheduler.

    python -m forecast.schedule                                       # nightly at 02:30 (conf/schedule.yaml)
    python -m forecast.schedule cron="0 */6 * * *" 'retrain_args=["data=csv","data.path=drops/"]'
    python -m forecast.schedule interval_s=60 max_runs=1              # a demo: one firing, a minute from now

The job lives in a persistent SQLite job store, so a firing missed while the scheduler was down
runs when it comes back (within `misfire_grace_s`; several missed firings coalesce into one), and
`max_instances=1` keeps firings from overlapping. Each firing runs `python -m forecast.retrain` as a
child process (its own lock also keeps retrains started elsewhere from overlapping) and logs the
start, the exit status and the duration. Exit status: 0; 1 when stopped by `max_runs` after a
firing whose retrain failed; 130 / 143 on SIGINT / SIGTERM, passed on to the retrain under way
(its runs end KILLED). Settings: conf/schedule.yaml.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import hydra
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from omegaconf import DictConfig

from forecast.errors import InputError, Interrupted, reported

log = logging.getLogger("forecast.schedule")
JOB = "retrain"
RUNNING: set[subprocess.Popen] = set()  # the retrain under way, to pass a signal on to
FINE = (0, 3)  # a retrain's exit statuses that are not failures (3: another one held the lock)


def run_retrain(args: list[str]) -> int:
    """One firing: `python -m forecast.retrain <args>` in this directory; returns its exit status."""
    command = [sys.executable, "-m", "forecast.retrain", *args]
    log.info("firing: python -m forecast.retrain %s", " ".join(args))
    started = time.perf_counter()
    child = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # its lines interleave with ours in order
    RUNNING.add(child)
    try:
        code = child.wait()
    finally:
        RUNNING.discard(child)
    took = time.perf_counter() - started
    (log.info if code == 0 else log.warning)("retrain exited with status %d after %.1f s", code, took)
    return code


@hydra.main(version_base="1.3", config_path="../conf", config_name="schedule")
def main(cfg: DictConfig) -> None:
    with reported():  # Ctrl-C / SIGTERM: exit 130 / 143, the retrain under way ends KILLED
        status = schedule(cfg)
    sys.exit(status)


def schedule(cfg: DictConfig) -> int:
    """Start the scheduler and block until stopped (Ctrl-C, SIGTERM) or `max_runs` firings are done.

    Returns 0, or 1 when a firing's retrain failed (an exit status other than 0 or 3); a signal is
    passed on to the retrain under way and raises Interrupted once it has stopped.
    """
    if cfg.max_runs is not None and not (isinstance(cfg.max_runs, int) and cfg.max_runs >= 1):
        raise InputError(f"max_runs={cfg.max_runs}: give a number of firings of 1 or more, or null to run until stopped")
    trigger = make_trigger(cfg)
    args = [str(a) for a in cfg.retrain_args]
    scheduler = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(url=cfg.jobstore)})
    scheduler.start(paused=True)  # the job store is open; nothing fires yet
    stored = scheduler.get_job(JOB)
    if stored is not None and stored.args == (args,) and str(stored.trigger) == str(trigger):
        log.info("resuming the stored schedule (%s): next run at %s", cfg.jobstore, stored.next_run_time)
    else:  # new or changed: re-adding would drop a missed firing, so only then
        scheduler.add_job(
            run_retrain,
            trigger,
            args=[args],
            id=JOB,
            name="python -m forecast.retrain",
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=int(cfg.misfire_grace_s),
        )
        log.info(
            "scheduled python -m forecast.retrain %s on %s: next run at %s", " ".join(args), trigger, scheduler.get_job(JOB).next_run_time
        )

    stop, fired = threading.Event(), []

    def on_event(event) -> None:
        if event.code == EVENT_JOB_MISSED:
            log.warning("missed the run due at %s (more than misfire_grace_s=%s late)", event.scheduled_run_time, cfg.misfire_grace_s)
            return
        fired.append(event)
        if cfg.max_runs and len(fired) >= cfg.max_runs:
            stop.set()

    scheduler.add_listener(on_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    scheduler.resume()
    try:
        stop.wait()
    except Interrupted as e:
        for child in list(RUNNING):
            child.send_signal(e.signum)  # the retrain ends its runs KILLED and exits
        scheduler.shutdown(wait=True)
        log.info("scheduler stopped by %s after %d firing(s)", e.name, len(fired))
        raise
    scheduler.shutdown(wait=True)  # lets a running retrain finish
    failed = [e for e in fired if e.code == EVENT_JOB_ERROR or e.retval not in FINE]
    log.info("scheduler stopped after %d firing(s)", len(fired))
    if failed:
        log.error(
            "%d of %d firing(s) failed (retrain exit status %s)",
            len(failed),
            len(fired),
            ", ".join(str(getattr(e, "retval", None)) for e in failed),
        )
        return 1
    return 0


def make_trigger(cfg: DictConfig):
    """The cron expression (or `interval_s`) as an APScheduler trigger; InputError when it does not parse."""
    if cfg.interval_s:
        return IntervalTrigger(seconds=float(cfg.interval_s))
    try:
        return CronTrigger.from_crontab(str(cfg.cron), timezone=cfg.timezone)
    except (ValueError, LookupError) as e:
        raise InputError(
            f"cron={cfg.cron!r} timezone={cfg.timezone}: {e}.\n"
            "Use five fields, minute hour day-of-month month day-of-week, e.g. cron='30 2 * * *'."
        ) from None


if __name__ == "__main__":
    main()
