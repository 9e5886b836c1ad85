"""``pgdr restore-table --from-backup``: one table as it was in a base backup, or at a moment
(``--at TIME``) or just before/after a transaction (``--xid X [--exclusive]``) of the recovery
window, brought back beside the live table or in its place.

The second source of :mod:`pgdr.logical.table`: a throwaway cluster
(:mod:`pgdr.logical.throwaway`, the restore and PITR functions of :mod:`pgdr.restore`) is
restored and started, the table's rows are read from it with ``COPY … TO STDOUT`` and streamed
into the same copy-in step as a dump's rows (:func:`pgdr.logical.table.copy_in`: a new table
beside the live one, or ``--replace --force`` in one transaction keeping dependent foreign keys
valid). The throwaway cluster is removed afterwards, also on failure.

Refused in one sentence before anything is restored: a backup of another database system
(system identifier), a target outside the recovery window (the PITR plan), ``--replace`` without
``--force``, an existing ``--as`` table, a table missing from the live database (a dropped
table comes back from a dump, ``--from``). Refused after the copy is restored, with nothing
changed in the live database: a database or table that did not exist at that moment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from pgdr.backup.chunks import private_dir
from pgdr.backup.manifest import Manifest
from pgdr.backup.repository import Repository
from pgdr.core import runner
from pgdr.core.connect import client_environment, connect
from pgdr.core.errors import ConfigError
from pgdr.core.names import join_name, split_table_name
from pgdr.logical.table import (
    TableRestore,
    beside_name,
    check_replace_options,
    copy_in,
    plan_copy_in,
    rename_and_count,
    table_columns,
)
from pgdr.logical.throwaway import throwaway_copy
from pgdr.logical.tools import binaries_for
from pgdr.restore.target import Target, make_target


def _system_identifier(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    assert row is not None
    return str(row[0])


def _copy_out(
    source: psycopg.Connection[Any], table: sql.Identifier, columns: list[str]
) -> Iterator[str]:
    """The rows of ``columns`` as text COPY lines (one CopyData message is one row)."""
    query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns), table
    )
    with source.cursor().copy(query) as copy:
        for data in copy:
            yield bytes(data).decode()


def _open_copy(conninfo: str, dbname: str, moment: str) -> psycopg.Connection[Any]:
    try:
        return connect(conninfo, autocommit=True, raw_errors=True)
    except psycopg.OperationalError as exc:
        raise ConfigError(f"Database {dbname} did not exist at {moment}.") from exc


def restore_table_from_backup(
    repo: Repository,
    conninfo: str,
    table: str,
    backup_id: str,
    *,
    at: str | None = None,
    xid: str | None = None,
    exclusive: bool = False,
    as_name: str | None = None,
    replace: bool = False,
    force: bool = False,
) -> TableRestore:
    """Restore ``table`` from a base backup (rolled forward to ``at``/``xid`` when given) beside
    the live table, or in its place with ``replace``."""
    began = time.monotonic()
    check_replace_options(as_name, replace, force)
    target = make_target(at, None, xid, None, False, exclusive)
    manifest = repo.read_manifest(repo.resolve_id(backup_id))
    schema, name = split_table_name(table)
    moment = target.describe() if target else f"the end of backup {manifest.id}"
    with connect(conninfo, autocommit=True, raw_errors=True) as conn:
        system = _system_identifier(conn)
        if manifest.system_identifier != system:
            raise ConfigError(
                f"Backup {manifest.id} is of database system {manifest.system_identifier}, "
                f"not of this database's ({system})."
            )
        live_columns = table_columns(conn, sql.Identifier(schema, name))
        if live_columns is None:
            return _restore_dropped(repo, conninfo, manifest, target, (schema, name), as_name)
        new_name = beside_name(name, manifest.id, as_name)
        result = TableRestore(join_name(schema, name), join_name(schema, new_name), manifest.id)
        result.source = f"backup {manifest.id} at {moment}"
        plan = plan_copy_in(
            conn, result, (schema, name), live_columns, new_name, replace=replace, force=force
        )
        dbname = conn.info.dbname
        with (
            throwaway_copy(repo, manifest.id, target, "table") as (copy, _restored),
            _open_copy(copy.conninfo(dbname), dbname, moment) as source,
        ):
            columns = table_columns(source, sql.Identifier(schema, name))
            if columns is None:
                raise ConfigError(f"Table {schema}.{name} did not exist at {moment}.")
            copy_in(conn, plan, result, columns, _copy_out(source, plan.live, columns))
    result.notes.append(f"Read from a throwaway copy at {moment}, removed afterwards.")
    result.duration_s = round(time.monotonic() - began, 3)
    return result


def _restore_dropped(
    repo: Repository,
    conninfo: str,
    manifest: Manifest,
    target: Target | None,
    qualified: tuple[str, str],
    as_name: str | None,
) -> TableRestore:
    """The table is gone from the live database: the copy's ``pg_dump -t`` of it (definition,
    rows, indexes, constraints) restored in one transaction, then renamed to ``as_name``."""
    began = time.monotonic()
    schema, name = qualified
    moment = target.describe() if target else f"the end of backup {manifest.id}"
    tools = binaries_for(manifest.pg_major, f"Backup {manifest.id}")
    client, env = client_environment(conninfo)
    with connect(conninfo, autocommit=True, raw_errors=True) as conn:
        if as_name and table_columns(conn, sql.Identifier(schema, as_name)) is not None:
            raise ConfigError(f"{join_name(schema, as_name)} exists; choose another --as.")
        dbname = conn.info.dbname
        pattern = sql.Identifier(schema, name).as_string(conn)
        with (
            throwaway_copy(repo, manifest.id, target, "table") as (copy, _restored),
            private_dir("pgdr-table-") as tmp,
        ):
            with _open_copy(copy.conninfo(dbname), dbname, moment) as source:
                if table_columns(source, sql.Identifier(schema, name)) is None:
                    raise ConfigError(f"Table {schema}.{name} did not exist at {moment}.")
            dump = [str(tools.tool("pg_dump")), "-d", copy.conninfo(dbname), "-Fc", "-t", pattern]
            runner.run([*dump, "--no-owner", "-f", str(tmp / "table.dump")])
            restore = [str(tools.tool("pg_restore")), "--no-owner", "--single-transaction"]
            runner.run(
                [*restore, "--exit-on-error", "-d", client, str(tmp / "table.dump")], env=env
            )
        rows = rename_and_count(conn, schema, name, as_name)
    result = TableRestore(join_name(schema, name), join_name(schema, as_name or name), manifest.id)
    result.source = f"backup {manifest.id} at {moment}"
    result.rows = rows
    result.notes.append(
        f"{join_name(schema, name)} did not exist in the database: it was created as it was at "
        f"{moment} (definition, rows, indexes and constraints) from a throwaway copy, removed "
        "afterwards."
    )
    result.duration_s = round(time.monotonic() - began, 3)
    return result
