"""Measurements taken in a fresh process: its memory, and a child that reports one JSON line.

Kept free of heavy imports (no MLflow, no torch), so that a child measuring its own memory
carries nothing but what it measures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def status_mb(key: str) -> float:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in MiB."""
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(key + ":")) / 1024


def run_child(module: str, args: list[str], what: str) -> dict:
    """`python -m <module> --child <args>` in a fresh process; its last stdout line, as JSON. Exits on failure."""
    command = [sys.executable, "-m", module, "--child", *args]
    done = subprocess.run(command, check=False, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    if done.returncode:
        sys.exit(f"{what} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
