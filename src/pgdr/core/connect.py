"""pgdr's one way to reach a database: :func:`connect`, and what a failure means in one sentence.

Every connection pgdr opens carries ``application_name`` (``pgdr`` unless a caller names a more
specific role) and a libpq ``connect_timeout`` (at least 2 s, libpq's minimum); pools
(``pgdr.pool``) use the same :func:`connect_kwargs`.

Invariants:
- a ``psycopg`` error never reaches a user as a traceback: :func:`translate` turns the kinds
  pgdr anticipates (authentication failed, server unreachable, read-only transaction, lock
  timeout, disk full, server closed the connection, statement timeout) into one-sentence
  :class:`~pgdr.core.errors.PgdrError`\\ s, and ``pgdr.cli.app.main`` applies it to any
  ``psycopg.Error`` that escapes a command;
- a password is never printed: :func:`redact` masks it, and :func:`client_environment` moves it
  from a connection string into ``PGPASSWORD`` for a client program's environment.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from pgdr.core.errors import PgdrError, RuntimeFailure

APPLICATION_NAME = "pgdr"
DEFAULT_TIMEOUT_S = 10.0


def connect_kwargs(
    timeout_s: float = DEFAULT_TIMEOUT_S, application_name: str = APPLICATION_NAME
) -> dict[str, Any]:
    """libpq parameters every pgdr connection carries."""
    return {
        "connect_timeout": max(2, math.ceil(min(timeout_s, 86_400.0))),
        "application_name": application_name,
    }


def connect(
    conninfo: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    application_name: str = APPLICATION_NAME,
    raw_errors: bool = False,
    **kwargs: Any,
) -> psycopg.Connection[TupleRow]:
    """One connection, or a one-sentence RuntimeFailure saying why there is none.

    ``raw_errors`` lets a caller that classifies failures itself (a retry loop, a workload
    counting them) see the psycopg error instead.
    """
    params = connect_kwargs(timeout_s, application_name) | kwargs
    try:
        return psycopg.connect(conninfo, **params)
    except psycopg.Error as exc:
        if raw_errors:
            raise
        raise translate(exc, connecting=True) from exc


@contextmanager
def translating() -> Iterator[None]:
    """Run a block whose psycopg errors should surface as pgdr's one-sentence errors."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc


def describe_connect_error(exc: BaseException) -> str:
    """libpq's multi-line error reduced to its most telling sentence."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    for line in lines:
        lowered = line.lower()
        if "password authentication failed" in lowered or "authentication failed" in lowered:
            return "the password was rejected (password authentication failed)."
        if "timeout expired" in lowered:
            return "the server did not answer before the connection timeout."
        if "connection refused" in lowered:
            return "the server refused the connection (is it running, on that port?)."
        if "does not exist" in lowered:
            return line.split("FATAL:", 1)[-1].strip().rstrip(".") + "."
    return (lines[-1] if lines else "unknown error").rstrip(".") + "."


_KINDS: tuple[tuple[type[psycopg.Error], str], ...] = (
    (
        pg_errors.ReadOnlySqlTransaction,
        "The database is read-only (a standby, or read-only mode is on); nothing was written",
    ),
    (
        pg_errors.LockNotAvailable,
        "A lock could not be taken before the lock timeout; another session holds it",
    ),
    (pg_errors.DiskFull, "The database server's disk is full"),
    (pg_errors.QueryCanceled, "The statement was cancelled (statement timeout or cancel request)"),
    (pg_errors.InsufficientPrivilege, "The database user lacks a privilege this needs"),
    (pg_errors.AdminShutdown, "The database server is shutting down"),
)


def translate(exc: psycopg.Error, *, connecting: bool = False) -> PgdrError:
    """The one-sentence pgdr error for a psycopg error (the detail kept after a colon)."""
    detail = first_line(exc)
    for kind, sentence in _KINDS:
        if isinstance(exc, kind):
            return RuntimeFailure(f"{sentence}: {detail}")
    text = str(exc).lower()
    if "server closed the connection" in text or "connection is closed" in text:
        return RuntimeFailure(
            "The database server closed the connection unexpectedly "
            "(it crashed, restarted or was stopped)."
        )
    if connecting or isinstance(exc, psycopg.OperationalError):
        return RuntimeFailure(f"Cannot connect to the database: {describe_connect_error(exc)}")
    return RuntimeFailure(f"The database reported an error: {detail}")


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an error's text, ending in a full stop."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__).rstrip(".") + "."


def hosts(conninfo: str) -> list[str]:
    """The hosts a (libpq multi-host) connection string lists; one entry when it names one."""
    return str(conninfo_to_dict(conninfo).get("host") or "").split(",")


def redact(conninfo: str) -> str:
    """The connection string with any password masked, safe to print or log."""
    try:
        params = conninfo_to_dict(conninfo)
    except Exception:  # a malformed string: print nothing of it
        return "<unparseable connection string>"
    if "password" in params:
        params["password"] = "***"  # noqa: S105 - a mask, not a secret
    return make_conninfo("", **{k: str(v) for k, v in params.items() if v is not None})


def client_environment(conninfo: str) -> tuple[str, dict[str, str]]:
    """For running a PostgreSQL client program: the connection string without its password,
    and an environment carrying the password as ``PGPASSWORD``, so it never appears in argv
    (which every local user can read in ``ps``)."""
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    env = dict(os.environ)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = password
    return make_conninfo("", **params), env
