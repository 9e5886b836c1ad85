"""Read-only mode: ``default_transaction_read_only`` for one database or the whole server.

* ``database`` scope: ``ALTER DATABASE ... SET default_transaction_read_only = on``. New sessions
  are read-only at once; existing sessions keep their setting, so ``terminate`` ends the other
  sessions of that database (applications reconnect into read-only sessions).
* ``server`` scope: ``ALTER SYSTEM`` + ``pg_reload_conf()``. Every session picks the new default
  up at its next transaction, without being disconnected.

It is a brake, not a lock: a client that explicitly asks for a read-write transaction can still
write. The runbook's application flag (``READ_ONLY_MODE``) and this setting complement each other.
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


@dataclass
class ReadOnlyState:
    database: str
    database_read_only: bool
    server_read_only: bool
    effective: bool
    terminated_sessions: int = 0

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


def set_read_only(
    conn: psycopg.Connection[Any],
    enabled: bool,
    scope: Scope = Scope.DATABASE,
    terminate: bool = False,
) -> ReadOnlyState:
    """Turn read-only mode on or off; ``conn`` must be in autocommit mode."""
    value = sql.Literal("on" if enabled else "off")
    # This session may itself have started read-only; the switch must still be able to act.
    conn.execute("SET default_transaction_read_only = off")
    if scope is Scope.DATABASE:
        dbname = sql.Identifier(conn.info.dbname)
        if enabled:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}").format(
                    dbname, value
                )
            )
        else:
            conn.execute(
                sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(dbname)
            )
    elif enabled:
        conn.execute(sql.SQL("ALTER SYSTEM SET default_transaction_read_only = {}").format(value))
        conn.execute("SELECT pg_reload_conf()")
    else:
        conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        conn.execute("SELECT pg_reload_conf()")
    terminated = 0
    if terminate:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        ).fetchone()
        terminated = int(row[0]) if row else 0
    state = read_only_status(conn)
    state.terminated_sessions = terminated
    return state
