"""Read-only mode: ``default_transaction_read_only`` for one database or the whole server.

* ``database`` scope: ``ALTER DATABASE ... SET default_transaction_read_only = on``. New sessions
  are read-only at once; existing sessions keep their setting, so ``terminate`` ends the other
  sessions of that database (applications reconnect into read-only sessions).
* ``server`` scope: ``ALTER SYSTEM`` + ``pg_reload_conf()``. Every session picks the new default
  up at its next transaction, without being disconnected.

It is a brake, not a lock: a client that explicitly asks for a read-write transaction can still
write. The runbook's application flag (``READ_ONLY_MODE``) and this setting complement each other.

``off`` restores exactly what ``on`` found: ``on`` records the state it found in a setting next
to the one it changes (``pgdr.read_only_before``, on the database or in ``postgresql.auto.conf``),
so a database or server that was read-only before stays read-only after ``off`` (which says so);
without such a record ``off`` makes the scope writable, overriding a ``postgresql.conf`` line if
need be, and checks that it did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql


class Scope(StrEnum):
    DATABASE = "database"
    SERVER = "server"


MARKER = "pgdr.read_only_before"


@dataclass
class ReadOnlyState:
    database: str
    database_read_only: bool
    server_read_only: bool
    effective: bool
    terminated_sessions: int = 0
    kept_read_only: bool = False  # ``off`` left it read-only: it was read-only before ``on``
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_only_status(conn: psycopg.Connection[Any]) -> ReadOnlyState:
    dbname = conn.info.dbname
    db_row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = "
        "s.setdatabase WHERE d.datname = %s AND s.setrole = 0 AND "
        "'default_transaction_read_only=on' = ANY(s.setconfig))",
        (dbname,),
    ).fetchone()
    database_ro = bool(db_row and db_row[0])
    server_ro = _server_read_only(conn)
    return ReadOnlyState(dbname, database_ro, server_ro, database_ro or server_ro)


def _server_read_only(conn: psycopg.Connection[Any]) -> bool:
    """The value from the configuration files (what ALTER SYSTEM wrote), not this session's."""
    try:
        row = conn.execute(
            "SELECT setting = 'on' FROM pg_file_settings WHERE name = "
            "'default_transaction_read_only' AND error IS NULL ORDER BY seqno DESC LIMIT 1"
        ).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        conn.rollback()
        row = conn.execute(
            "SELECT reset_val = 'on' FROM pg_settings WHERE name = 'default_transaction_read_only'"
        ).fetchone()
    return bool(row and row[0])


def _db_marker(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute(
        "SELECT c FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, "
        "unnest(s.setconfig) c WHERE d.datname = current_database() AND s.setrole = 0 "
        "AND c LIKE %s",
        (MARKER + "=%",),
    ).fetchone()
    return str(row[0]).split("=", 1)[1] if row else None


def _server_marker(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute(
        "SELECT setting FROM pg_file_settings WHERE name = %s AND error IS NULL "
        "ORDER BY seqno DESC LIMIT 1",
        (MARKER,),
    ).fetchone()
    return str(row[0]) if row else None


def _apply(conn: psycopg.Connection[Any], scope: Scope, name: str, value: str | None) -> None:
    """SET (or RESET when ``value`` is None) one setting at ``scope``."""
    target = (
        sql.SQL("ALTER DATABASE {}").format(sql.Identifier(conn.info.dbname))
        if scope is Scope.DATABASE
        else sql.SQL("ALTER SYSTEM")
    )
    ident = sql.SQL(".").join(sql.Identifier(p) for p in name.split("."))
    if value is None:
        conn.execute(sql.SQL("{} RESET {}").format(target, ident))
    else:
        conn.execute(sql.SQL("{} SET {} = {}").format(target, ident, sql.Literal(value)))


def _at_scope(state: ReadOnlyState, scope: Scope) -> bool:
    return state.database_read_only if scope is Scope.DATABASE else state.server_read_only


def set_read_only(
    conn: psycopg.Connection[Any],
    enabled: bool,
    scope: Scope = Scope.DATABASE,
    terminate: bool = False,
) -> ReadOnlyState:
    """Turn read-only mode on or off; ``conn`` must be in autocommit mode."""
    # This session may itself have started read-only; the switch must still be able to act.
    conn.execute("SET default_transaction_read_only = off")
    marker = _db_marker(conn) if scope is Scope.DATABASE else _server_marker(conn)
    kept = False
    if enabled:
        if marker is None:  # the first ``on``: remember what it found
            before = _at_scope(read_only_status(conn), scope)
            _apply(conn, scope, MARKER, "on" if before else "off")
        _apply(conn, scope, "default_transaction_read_only", "on")
    else:
        kept = marker == "on"
        if marker is not None:  # (PostgreSQL 15 refuses to reset an unknown custom setting)
            _apply(conn, scope, MARKER, None)
        if not kept:
            _apply(conn, scope, "default_transaction_read_only", None)
    if scope is Scope.SERVER:
        conn.execute("SELECT pg_reload_conf()")
        if not enabled and not kept and _server_read_only(conn):
            # postgresql.conf itself says on: override it in postgresql.auto.conf
            _apply(conn, scope, "default_transaction_read_only", "off")
            conn.execute("SELECT pg_reload_conf()")
    terminated = _terminate(conn) if terminate else 0
    state = read_only_status(conn)
    state.terminated_sessions = terminated
    state.kept_read_only = kept
    state.message = _sentence(state, enabled, scope, kept)
    return state


def _terminate(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'"
    ).fetchone()
    return int(row[0]) if row else 0


def _sentence(state: ReadOnlyState, enabled: bool, scope: Scope, kept: bool) -> str:
    where = f"database {state.database}" if scope is Scope.DATABASE else "the server"
    if enabled:
        return f"Read-only mode is on for {where}."
    if kept:
        return (
            f"{where[0].upper()}{where[1:]} was already read-only before `pgdr readonly on`, so "
            "it was left read-only; run `pgdr readonly off` again to make it writable."
        )
    if state.effective:
        other = "server" if scope is Scope.DATABASE else "database"
        return (
            f"Read-only mode is off for {where}, but new sessions are still read-only because "
            f"of the {other} scope (pgdr readonly off --scope {other})."
        )
    return f"Read-only mode is off: {where} is writable."
