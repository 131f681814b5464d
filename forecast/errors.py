"""The one exception type whose message is meant for the user, not for a debugger."""


class InputError(ValueError):
    """A problem the user can fix: bad data, a bad setting, an unreachable service.

    The command-line entry points print its message (one or two lines naming the file, row or
    column, what was expected and how to fix it) and exit with status 2, without a traceback.
    """
