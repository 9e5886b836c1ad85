"""pgdr's one way to run a PostgreSQL program (pg_basebackup, pg_verifybackup, pg_amcheck, …).

Which binary: the caller passes the program's path, chosen for the server's major version by
``pgdr.cluster.installation_for_major`` (which honours ``PGDR_PG_BIN``). How it runs:

- secrets only through the environment (``secrets`` are added to the child's environment, never
  to argv, which every local user can read in ``ps``);
- stdin closed; stdout/stderr captured as text (or sent where the caller says, for streams);
- a timeout stops the program (SIGTERM, then SIGKILL after a grace period) and is reported as one
  sentence, as is a missing binary;
- a failure becomes a :class:`~pgdr.core.errors.RuntimeFailure` (or the ``error`` class given)
  whose message is ``"<program> failed: <the last line it printed>."`` — :func:`last_line` is the
  single parser of a program's complaint.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from pgdr.core.errors import PgdrError, RuntimeFailure

STOP_GRACE_S = 10.0


class TimedOut(RuntimeFailure):
    """A program ran past its timeout and was stopped."""


Argv = Sequence[str | Path]
Process = subprocess.Popen[bytes]
"""A running program started by :func:`start`."""


def last_line(text: str | bytes | None) -> str:
    """The last non-empty line a program printed (its conclusion), or ``"no output"``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def error_line(text: str | bytes | None) -> str:
    """The first line of a PostgreSQL tool's output that says ``error:`` (what went wrong;
    ``pg_restore`` follows it with the failed command, whose last line is ``);``), else the
    last line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    for line in (text or "").splitlines():
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return last_line(text)


def sentence(program: str, text: str | bytes | None) -> str:
    """``"<program> failed: <last line>."``, one sentence."""
    return f"{program} failed: {last_line(text)}".rstrip(".") + "."


def child_environment(
    env: Mapping[str, str] | None = None, secrets: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a child program: ``env`` (default: ours) plus ``secrets``."""
    result = dict(os.environ if env is None else env)
    result.update(secrets or {})
    return result


def program_name(argv: Argv) -> str:
    return Path(str(argv[0])).name


def run(
    argv: Argv,
    *,
    env: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    check: bool = True,
    error: type[PgdrError] = RuntimeFailure,
    cwd: Path | None = None,
    input_text: str | None = None,
    as_user: tuple[int, int] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a program to completion; with ``check``, a non-zero exit raises ``error``.

    ``as_user`` (uid, gid) runs it as another OS user (servers refuse to run as root).
    """
    name = program_name(argv)
    identity: dict[str, Any] = {}
    if as_user is not None:
        identity = {"user": as_user[0], "group": as_user[1], "extra_groups": []}
    try:
        result = subprocess.run(
            [str(a) for a in argv],
            env=child_environment(env, secrets),
            cwd=cwd,
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
            timeout=timeout_s,
            input=input_text,
            stdin=subprocess.DEVNULL if input_text is None else None,
            **identity,
        )
    except subprocess.TimeoutExpired as exc:
        raise TimedOut(f"{name} did not finish within {timeout_s:g} s and was stopped.") from exc
    except OSError as exc:
        raise error(f"Cannot run {name}: {exc.strerror or exc}.") from exc
    if check and result.returncode != 0:
        raise error(sentence(name, result.stderr or result.stdout))
    return result


def start(
    argv: Argv,
    *,
    env: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    stdout: int | IO[Any] | None = subprocess.PIPE,
    stderr: int | IO[Any] | None = subprocess.PIPE,
    cwd: Path | None = None,
    new_session: bool = False,
    unbuffered: bool = False,
    preexec: Callable[[], None] | None = None,
    stdin_pipe: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a long-running program; the caller reads it and ends it with :func:`stop`."""
    try:
        return subprocess.Popen(
            [str(a) for a in argv],
            env=child_environment(env, secrets),
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            start_new_session=new_session,
            bufsize=0 if unbuffered else -1,
            preexec_fn=preexec,  # noqa: PLW1509 - callers pass async-signal-safe work (prctl)
        )
    except OSError as exc:
        raise RuntimeFailure(f"Cannot run {program_name(argv)}: {exc.strerror or exc}.") from exc


def stop(
    proc: subprocess.Popen[Any], grace_s: float = STOP_GRACE_S, sig: int = signal.SIGTERM
) -> int:
    """Cancel a running program: ``sig``, then SIGKILL after ``grace_s``; its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
