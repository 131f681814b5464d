"""One retrain per store at a time: an exclusive lock beside the tracking store.

The kernel drops a `flock` when its process dies, kill -9 included, so no stale lock is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path

from forecast import tracking


class Busy(Exception):
    """Another retrain holds the lock."""


def lock_path(setting: str | None) -> Path:
    """Where the lock file lives: beside the store, which it guards."""
    if setting:
        return Path(setting)
    uri = tracking.tracking_uri()
    if uri == tracking.DEFAULT_URI:
        return Path("mlruns") / "retrain.lock"
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///") + ".retrain.lock")
    return Path("retrain.lock")  # a tracking server: guards this host only


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
