"""How a command ends: the exceptions meant for the user, and the one wrapper that turns them into exit statuses.

Every command's body runs inside `reported()`:

    exit 0    the job did what was asked, every recorded figure finite
    exit 2    InputError: bad data or settings (`error: ...`, one or two lines, no traceback)
    exit 1    JobFailed: a failure inside the job (a loss that became NaN); its MLflow run is FAILED
    exit 130  SIGINT (Ctrl-C)      \\ the active MLflow run(s) are marked KILLED, never FINISHED or FAILED,
    exit 143  SIGTERM (kill, stop) /  and one line says so
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from omegaconf.errors import InterpolationResolutionError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class InputError(ValueError):
    """A problem the user can fix: bad data, a bad setting, an unreachable service.

    The command-line entry points print its message (one or two lines naming the file, row or
    column, what was expected and how to fix it) and exit with status 2, without a traceback.
    `context`: lines that explain it (such as the data report), printed to stdout before it.
    """

    def __init__(self, message: str, context: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.context = list(context)


class JobFailed(RuntimeError):
    """The job ran and failed (a loss that became non-finite, a non-finite test score): exit status 1.

    Raised inside an MLflow run, which then ends FAILED; nothing is logged as a model or registered.
    """


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; `signum` says which.

    A BaseException (as KeyboardInterrupt is) so that no `except Exception` swallows it, but not a
    KeyboardInterrupt: Lightning's `trainer.fit` catches KeyboardInterrupt and calls `sys.exit(1)`,
    whereas any other BaseException passes through it after its teardown.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)
        self.killed: list[str] = []  # the MLflow runs already ended KILLED on the way out

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def status(self) -> int:
        return 128 + self.signum  # what a shell reports for a process killed by the signal


_OWNER = [0]  # the process that installed the handlers
_HELD = {"depth": 0, "pending": None}  # open held() blocks, and a signal that arrived inside one


def _raise(signum, frame) -> None:
    if os.getpid() != _OWNER[0]:  # a forked child (a DataLoader worker) inherited the handler:
        raise KeyboardInterrupt  # it stops as it would by default, and the command reports the signal
    if _HELD["depth"]:  # inside a store write: raised when the write ends (held)
        _HELD["pending"] = signum
        return
    for sig in SIGNALS:  # a second Ctrl-C must not cut the clean-up short
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def reported():
    """Around a command's body: InputError -> its context on stdout, `error:` on stderr, exit 2;
    JobFailed -> exit 1; SIGINT/SIGTERM -> 130/143.

    SIGINT and SIGTERM raise `Interrupted` in the main thread for the duration of the block (a
    Hydra multirun therefore stops at the first signal); the active MLflow run(s) end KILLED.
    """
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    _OWNER[0] = os.getpid()
    for sig in SIGNALS:
        signal.signal(sig, _raise)
    try:
        yield
    except InputError as e:
        print(*e.context, sep="\n", end="\n" if e.context else "", flush=True)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except InterpolationResolutionError as e:  # a resolver's InputError (${dataset_path:ETTh1}), wrapped by OmegaConf
        if not isinstance(e.__context__, InputError):
            raise
        print(f"error: {e.__context__}", file=sys.stderr)
        sys.exit(2)
    except JobFailed as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except (Interrupted, KeyboardInterrupt) as e:
        stopped = e if isinstance(e, Interrupted) else Interrupted(signal.SIGINT)
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        runs = stopped.killed + end_runs_killed()
        marked = f"; run {', '.join(runs)} marked KILLED" if runs else ""
        print(f"interrupted by {stopped.name}{marked}", file=sys.stderr)
        sys.exit(stopped.status)
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


@contextlib.contextmanager
def held():
    """Around a write to the tracking store: SIGINT/SIGTERM wait until it is done.

    The signal handler raises wherever the main thread is; raised inside an SQLite transaction or
    fetch it leaves the database locked (or logs a traceback), and the run could then not be marked
    KILLED. The signals are blocked for this thread, and since another thread may still take one
    (Python then runs the handler in the main thread, here), the handler only notes it while a held
    block is open; it is raised when the outermost block ends.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    _HELD["depth"] += 1
    try:
        yield
    finally:
        _HELD["depth"] -= 1
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # one blocked for this thread is handled here
        if not _HELD["depth"] and _HELD["pending"] is not None:
            signum, _HELD["pending"] = _HELD["pending"], None
            _raise(signum, None)


def end_runs_killed() -> list[str]:
    """End every active MLflow run of this process KILLED (innermost first); their ids."""
    mlflow = sys.modules.get("mlflow")  # a command that never imported MLflow has no run
    ended = []
    while mlflow is not None and mlflow.active_run() is not None:
        ended.append(mlflow.active_run().info.run_id)
        mlflow.end_run("KILLED")
    return ended
