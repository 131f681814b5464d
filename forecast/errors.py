"""The one exception type whose message is meant for the user, not for a debugger."""

import contextlib
import sys

from omegaconf.errors import InterpolationResolutionError


class InputError(ValueError):
    """A problem the user can fix: bad data, a bad setting, an unreachable service.

    The command-line entry points print its message (one or two lines naming the file, row or
    column, what was expected and how to fix it) and exit with status 2, without a traceback.
    `context`: lines that explain it (such as the data report), printed to stdout before it.
    """

    def __init__(self, message: str, context: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.context = list(context)


@contextlib.contextmanager
def reported():
    """Around a command's body: an InputError becomes its context on stdout, `error: <message>` on stderr, exit status 2."""
    try:
        yield
    except InputError as e:
        print(*e.context, sep="\n", end="\n" if e.context else "", flush=True)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except InterpolationResolutionError as e:      # a resolver's InputError (${dataset_path:ETTh1}), wrapped by OmegaConf
        if not isinstance(e.__context__, InputError):
            raise
        print(f"error: {e.__context__}", file=sys.stderr)
        sys.exit(2)
