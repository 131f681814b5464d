"""Child commands of compare and tune: run them, and pass an interruption on to them.

`compare` launches its trainings and tunings, and `tune` its trials' multirun, as child processes.
When the parent is interrupted (SIGINT, SIGTERM: forecast.errors.Interrupted) every child still
running gets the same signal, so its own run ends KILLED before the parent's does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from omegaconf import DictConfig

from forecast.errors import Interrupted

POLL_S = 0.5  # how often commands run side by side are checked for their end
STOP_WAIT_S = 120  # how long an interrupted child may take to end its run before it is killed


def launch(command: list[str]) -> int:
    """Run one command to its end, its output passed through; its exit status."""
    return launch_together({"": command}, at_once=1)[""]


def launch_together(commands: dict[str, list[str]], at_once: int) -> dict[str, int]:
    """Run the named commands, at most `at_once` at a time; each one's exit status by name.

    With more than one at a time each output line is prefixed with its command's name (`[gru] ...`).
    After a command fails no further one starts (those running go on to their end), and the
    statuses hold only the commands that ran.
    """
    statuses, pending, running = {}, list(commands.items()), {}
    try:
        while running or (pending and not any(statuses.values())):
            while pending and len(running) < at_once and not any(statuses.values()):
                name, command = pending.pop(0)
                running[name] = start(command, name if at_once > 1 else "")
            if at_once == 1:
                ((name, (child, echoes)),) = running.items()
                child.wait()
            else:
                time.sleep(POLL_S)
            for name, (child, echoes) in list(running.items()):
                if child.poll() is not None:
                    for thread in echoes:
                        thread.join()  # the rest of its output
                    statuses[name] = child.returncode
                    del running[name]
    except Interrupted as e:
        for child, _ in running.values():
            child.send_signal(e.signum)
        for child, _ in running.values():
            try:
                child.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                child.kill()
        raise
    return statuses


def start(command: list[str], prefix: str) -> tuple[subprocess.Popen, list[threading.Thread]]:
    """Start a command; with a prefix, its stdout and stderr are echoed line by line with `[prefix] ` before each."""
    if not prefix:
        return subprocess.Popen(command), []
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    echoes = [
        threading.Thread(target=echo, args=(child.stdout, sys.stdout, f"[{prefix}] "), daemon=True),
        threading.Thread(target=echo, args=(child.stderr, sys.stderr, f"[{prefix}] "), daemon=True),
    ]
    for thread in echoes:
        thread.start()
    return child, echoes


def echo(stream, to, prefix: str) -> None:
    for line in stream:
        to.write(prefix + line)
        to.flush()


def side_by_side(cfg: DictConfig, count: int) -> int:
    """How many trainings of `cfg` can run at once without slowing each other: cores / threads per training.

    One at a time when a training uses an accelerator or several devices (a GPU, DDP), or every core.
    """
    trainer = cfg.trainer
    on_cpu = trainer.accelerator == "cpu" or (trainer.accelerator == "auto" and not gpu_available())
    if not on_cpu or str(trainer.devices) not in ("1", "auto") or "ddp" in str(trainer.strategy) or not cfg.threads:
        return 1
    return max(1, min(count, (os.cpu_count() or 1) // int(cfg.threads)))


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()
