"""The error hierarchy and the exit codes every pgdr command shares.

Every failure pgdr expects is a :class:`PgdrError` whose message is one sentence a person can
act on; the CLI prints it and exits with the error's code. Anything else is a bug.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented process exit codes (see docs/cli.md)."""

    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    RUNTIME = 3


class PgdrError(Exception):
    """A failure pgdr anticipated: a clear sentence and an exit code, never a traceback."""

    exit_code: ExitCode = ExitCode.RUNTIME

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(PgdrError):
    """Bad settings, a bad profile or bad command-line input."""

    exit_code = ExitCode.USAGE


class RuntimeFailure(PgdrError):
    """The work could not be done: a server is down, a tool failed, a disk is full."""

    exit_code = ExitCode.RUNTIME


class CheckFailed(PgdrError):
    """A check ran and found something wrong (unhealthy, critical findings)."""

    exit_code = ExitCode.CHECK_FAILED
