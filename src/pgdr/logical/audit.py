"""``pgdr audit install|remove|show``: an optional trigger trail of who changed or deleted what.

The runbook finds a deletion's time "from audit logs (if available)"; ``wal find`` needs none,
but the WAL does not say who. ``install`` adds, in the target database:

- ``public.pgdr_audit`` (id, at, table_name, op, key, role, txid): one row per updated or
  deleted row (its primary key, or the whole old row for a table without one; ``key`` is jsonb)
  and one per TRUNCATE (no key). ``at`` is the statement's clock time, ``role`` the session and
  current user, ``txid`` the 64-bit transaction id (``txid_current()``; its low 32 bits are the
  xid ``wal find`` reports).
- ``public.pgdr_audit_row()``: the trigger function, ``SECURITY DEFINER`` with a fixed
  ``search_path`` so any role that may change the table is recorded without rights on the trail.
- on each table: row trigger ``pgdr_audit`` (AFTER UPDATE OR DELETE) and statement trigger
  ``pgdr_audit_truncate`` (AFTER TRUNCATE), each commented ``installed by pgdr audit``.

Invariants: ``install`` is idempotent (``IF NOT EXISTS`` / ``CREATE OR REPLACE``, one
transaction); ``remove`` drops only triggers carrying pgdr's comment and the function, and the
trail table only with ``force`` (its rows are history nobody else has); ``show`` only reads,
and says so when no trail is installed. ``wal find`` and ``undelete`` read the trail
(:func:`pgdr.wal.find.audit_trail`) to say who ran a transaction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgdr.core.connect import connect
from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.core.names import join_name, kept_part, split_table_name
from pgdr.logical.table import primary_key, table_columns
from pgdr.profile import Profile

TRAIL = "pgdr_audit"
MARK = "installed by pgdr audit"

_CREATE_TRAIL = """
CREATE TABLE IF NOT EXISTS public.pgdr_audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    table_name text NOT NULL,
    op text NOT NULL,
    key jsonb,
    role text NOT NULL DEFAULT session_user,
    txid bigint NOT NULL DEFAULT txid_current()
)"""

_CREATE_FUNCTION = """
CREATE OR REPLACE FUNCTION public.pgdr_audit_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO public.pgdr_audit (table_name, op, key, role)
    VALUES (
        -- as pgdr writes names (pgdr.core.names.join_name): quoted unless plain lower case
        CASE WHEN TG_TABLE_SCHEMA ~ '^[a-z_][a-z0-9_$]*$' THEN TG_TABLE_SCHEMA
             ELSE '"' || replace(TG_TABLE_SCHEMA, '"', '""') || '"' END || '.' ||
        CASE WHEN TG_TABLE_NAME ~ '^[a-z_][a-z0-9_$]*$' THEN TG_TABLE_NAME
             ELSE '"' || replace(TG_TABLE_NAME, '"', '""') || '"' END,
        TG_OP,
        CASE WHEN TG_LEVEL = 'STATEMENT' THEN NULL
             WHEN TG_NARGS = 0 THEN to_jsonb(OLD)
             ELSE (SELECT jsonb_object_agg(k, to_jsonb(OLD) -> k) FROM unnest(TG_ARGV) AS k)
        END,
        session_user || CASE WHEN current_setting('role') NOT IN ('none', session_user)
            THEN ' as ' || current_setting('role') ELSE '' END
    );
    RETURN NULL;
END $$"""


@dataclass
class AuditStatus:
    database: str
    installed: bool = False
    tables: list[str] = field(default_factory=list)  # tables carrying pgdr's triggers
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    trail_dropped: bool = False
    trail_rows: int = 0
    entries: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def audit_tables(profile: Profile, chosen: list[str] | None) -> list[tuple[str, str]]:
    """(schema, name): ``--tables`` or every table of the profile."""
    if chosen:
        return list(dict.fromkeys(split_table_name(t) for t in chosen))
    tables = [(t.schema_name, t.name) for t in profile.tables]
    if not tables:
        raise ConfigError(f"The profile {profile.name} names no table; give --tables.")
    return tables


def _audited(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT DISTINCT t.tgrelid::regclass::text FROM pg_trigger t "
        "JOIN pg_description d ON d.objoid = t.oid AND d.classoid = 'pg_trigger'::regclass "
        "WHERE t.tgname IN ('pgdr_audit', 'pgdr_audit_truncate') AND d.description = %s "
        "ORDER BY 1",
        (MARK,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _trail_exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('public.pgdr_audit') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _key_columns(conn: psycopg.Connection[Any], table: sql.Identifier) -> list[str]:
    if table_columns(conn, table) is None:
        raise ConfigError(f"Table {table.as_string(conn)} does not exist; nothing was installed.")
    return primary_key(conn, table)


def _add_triggers(conn: psycopg.Connection[Any], table: sql.Identifier, key: list[str]) -> None:
    args = sql.SQL(", ").join(sql.Literal(c) for c in key)
    for name, event, level in (
        ("pgdr_audit", "UPDATE OR DELETE", "ROW"),
        ("pgdr_audit_truncate", "TRUNCATE", "STATEMENT"),
    ):
        trigger = sql.Identifier(name)
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE TRIGGER {} AFTER {} ON {} FOR EACH {} "
                "EXECUTE FUNCTION public.pgdr_audit_row({})"
            ).format(trigger, sql.SQL(event), table, sql.SQL(level), args)
        )
        conn.execute(
            sql.SQL("COMMENT ON TRIGGER {} ON {} IS {}").format(trigger, table, sql.Literal(MARK))
        )


def install(conninfo: str, tables: list[tuple[str, str]]) -> AuditStatus:
    """The trail, its function and the triggers on ``tables``, in one transaction."""
    with connect(conninfo, autocommit=True) as conn:
        status = AuditStatus(conn.info.dbname)
        before = set(_audited(conn))
        try:
            with conn.transaction():
                conn.execute(_CREATE_TRAIL)
                conn.execute(_CREATE_FUNCTION)
                for schema, name in tables:
                    ident = sql.Identifier(schema, name)
                    _add_triggers(conn, ident, _key_columns(conn, ident))
        except psycopg.Error as exc:
            raise RuntimeFailure(
                f"Installing the audit trail failed and was rolled back: {_first_line(exc)}"
            ) from exc
        status.installed = True
        status.tables = _audited(conn)
        status.added = [t for t in status.tables if t not in before]
    return status


def _first_line(exc: psycopg.Error) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def remove(conninfo: str, *, force: bool = False) -> AuditStatus:
    """Drop pgdr's triggers and function; the trail table (and its rows) only with ``force``."""
    with connect(conninfo, autocommit=True) as conn:
        status = AuditStatus(conn.info.dbname)
        status.removed = _audited(conn)
        with conn.transaction():
            for table in status.removed:
                for name in ("pgdr_audit", "pgdr_audit_truncate"):
                    conn.execute(
                        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                            sql.Identifier(name),
                            sql.SQL(table),  # regclass text: quoted already
                        )
                    )
            conn.execute("DROP FUNCTION IF EXISTS public.pgdr_audit_row()")
            if _trail_exists(conn):
                status.trail_rows = _count(conn)
                if force:
                    conn.execute("DROP TABLE public.pgdr_audit")
                    status.trail_dropped = True
                else:
                    status.notes.append(
                        f"The trail public.pgdr_audit ({status.trail_rows:,} rows) was kept; "
                        "pass --force to drop it too."
                    )
    return status


def _count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM public.pgdr_audit").fetchone()
    return int(row[0]) if row else 0


def show(conninfo: str, *, table: str | None = None, limit: int = 50) -> AuditStatus:
    """What is installed and the newest ``limit`` entries (of ``table``); reads only."""
    with connect(conninfo, autocommit=True) as conn:
        status = AuditStatus(conn.info.dbname)
        status.tables = _audited(conn)
        status.installed = _trail_exists(conn)
        if not status.installed:
            status.notes.append(f"No audit trail in {status.database}: `pgdr audit install`.")
            return status
        status.trail_rows = _count(conn)
        quoted, bare = _trail_names(table) if table is not None else (None, None)
        status.entries = _entries(
            conn,
            "WHERE %(table)s::text IS NULL OR table_name = %(table)s OR table_name = %(bare)s",
            {"table": quoted, "bare": bare},
            limit,
        )
        if quoted != bare and any(e["table"] == bare for e in status.entries):
            status.notes.append(
                f"Entries recorded before pgdr quoted names in the trail name this table "
                f"{bare}, as they name any table spelt the same without quotes; those are "
                "shown too."
            )
    return status


def _trail_names(table: str) -> tuple[str, str]:
    """How the trail names ``table``: as pgdr writes names (``public."my.table"``, quoted
    where needed, as the trigger stores them), and bare, as the trail stored them before
    (``public.my.table``, which another table could also be)."""
    schema, name = (kept_part(part) for part in split_table_name(table))
    return join_name(schema, name), f"{schema}.{name}"


def _entries(
    conn: psycopg.Connection[Any], where: str, params: dict[str, Any], limit: int
) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT at, table_name, op, key, role, txid, mod(txid, 4294967296) FROM public.pgdr_audit "
        + where
        + " ORDER BY id DESC LIMIT %(limit)s",
        params | {"limit": limit},
    ).fetchall()
    return [
        {
            "at": r[0].isoformat(),
            "table": r[1],
            "op": r[2],
            "key": r[3],
            "role": r[4],
            "txid": int(r[5]),
            "xid": int(r[6]),
        }
        for r in rows
    ]
