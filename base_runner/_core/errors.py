"""Errors the runner reports as one line and an exit code, never a traceback."""

from __future__ import annotations


class RunnerError(Exception):
    """A fault the user can fix; ``str()`` is the whole message."""

    #: Process exit code when this error ends a command.
    exit_code = 1


class ConfigError(RunnerError):
    """Bad settings, environment or data dir: fix the command line or environment."""

    exit_code = 2


class SelectionError(RunnerError):
    """No challenge, an unknown one, or an ambiguous choice among installed challenges."""

    exit_code = 2


class PluginError(RunnerError):
    """The selected challenge cannot be loaded: its package must be fixed."""

    exit_code = 3


def describe(exc: BaseException) -> str:
    """``<type>: <first line of the message>``, for a one-line report.

    Driver errors run to several lines, with the SQL and a link.
    """
    return f"{type(exc).__name__}: {str(exc).partition(chr(10))[0]}"
