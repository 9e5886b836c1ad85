"""``pgdr restore-table``: one table back from a dump (or a point-in-time copy), beside the live
one or in its place.

The runbook restores a single table with ``pg_restore --table``. pgdr does it without a scratch
database: the dump's ``TABLE DATA`` entry alone is read by the dump's own major version of
``pg_restore`` (``-L`` with that one entry) and its ``COPY`` rows go straight into the live
database under a new name, ``CREATE TABLE new (LIKE live INCLUDING ALL)``. Columns are mapped by
name: a column the dump has and the live table lost is listed as unmapped (its values are not
restored), a column added since is left to its default and listed too.

``--replace --force`` then makes the live table equal to the restored rows in the same
transaction: rows missing from the dump are deleted, the others inserted or updated by primary
key. The live table keeps its identity (OID, grants, triggers, dependent foreign keys), and the
foreign keys pointing at it are checked as usual: if a child still references a row the dump
does not have, the transaction is rolled back and nothing changed.

A table missing from the live database (dropped) comes back under its own name (or ``--as``)
with the dump's definition and rows. Refused in one sentence, nothing changed: a table not in
the dump, a dump of another database, a schema-only dump, a target name that exists (without
``--force``), ``--replace`` without ``--force``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgdr.backup.chunks import private_dir
from pgdr.backup.repository import Repository
from pgdr.core.connect import client_environment, connect
from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.core.names import NAME_MAX, join_name, kept_part, split_table_name
from pgdr.logical.archive import OpenDump, TocEntry, feed_pg_restore, open_dump, read_toc


@dataclass
class TableRestore:
    table: str
    restored_as: str
    dump_id: str  # the dump, or the base backup with --from-backup
    rows: int = 0
    mapped: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)  # in the dump, not in the live table
    defaulted: list[str] = field(default_factory=list)  # in the live table, not in the dump
    replaced: bool = False
    deleted: int = 0
    upserted: int = 0
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    source: str = ""  # "dump ID", or "backup ID" with its recovery target

    def __post_init__(self) -> None:
        self.source = self.source or f"dump {self.dump_id}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def beside_name(name: str, source_id: str, as_name: str | None) -> str:
    """The table a restore writes beside the live ``name``: ``--as``, or the name with the
    source's date, cut so that the date stays (cut by PostgreSQL instead, a long name lost
    the date, so every restore of a month wrote one table, or became the live table's name)."""
    if as_name is not None:
        if len(as_name.encode()) > NAME_MAX:
            raise ConfigError(f"--as {as_name!r} is longer than a name's {NAME_MAX} bytes.")
        return as_name
    suffix = "_" + source_id.split("-", maxsplit=1)[0].lower()
    return kept_part(name, NAME_MAX - len(suffix)) + suffix


def _check_same_database(dump: OpenDump, conn: psycopg.Connection[Any]) -> None:
    row = conn.execute(
        "SELECT current_database(), (SELECT system_identifier::text FROM pg_control_system())"
    ).fetchone()
    assert row is not None
    manifest = dump.manifest
    if (manifest.database, manifest.system_identifier) != (str(row[0]), str(row[1])):
        raise ConfigError(
            f"Dump {dump.id} is of database {manifest.database} on system "
            f"{manifest.system_identifier}, not of this database ({row[0]} on {row[1]})."
        )
    if manifest.kind == "export":
        raise ConfigError(f"{dump.id} is a CSV export, not a dump; restore a table from a dump.")
    if manifest.kind != "dump":
        raise ConfigError(f"Dump {dump.id} holds the schema only, no rows.")


def _entries(dump: OpenDump, schema: str, name: str) -> tuple[TocEntry, TocEntry]:
    found = {e.kind: e for e in read_toc(dump, (schema, name))}
    if "TABLE" not in found or "TABLE DATA" not in found:
        raise ConfigError(f"Table {join_name(schema, name)} is not in dump {dump.id}.")
    return found["TABLE"], found["TABLE DATA"]


_BARE = re.compile(r'[^\s",().]+')


def _identifier(line: str, at: int) -> tuple[str, int]:
    """The identifier at ``at`` in a line pg_dump wrote (``"a ""b"", c"`` unquoted) and where
    it ends."""
    if line.startswith('"', at):
        name, at = [], at + 1
        while (quote := line.find('"', at)) >= 0:
            name.append(line[at:quote])
            if not line.startswith('""', quote):
                return '"'.join(name), quote + 1
            at = quote + 2
    elif bare := _BARE.match(line, at):
        return bare.group(), bare.end()
    raise RuntimeFailure(f"The dump's line {line.strip()!r} cannot be read.")


def copy_columns(line: str) -> list[str]:
    """The column names of pg_dump's ``COPY schema.table (col, ...) FROM stdin;`` line, read
    identifier by identifier: a name may hold commas, brackets, dots and quotes."""
    _schema, at = _identifier(line, len("COPY "))
    while line.startswith(".", at):
        _name, at = _identifier(line, at + 1)
    names: list[str] = []
    if line.startswith(" (", at):  # none for a table without columns: "COPY t  FROM stdin;"
        name, at = _identifier(line, at + 2)
        names.append(name)
        while line.startswith(", ", at):
            name, at = _identifier(line, at + 2)
            names.append(name)
        at += 1 if line.startswith(")", at) else len(line)
    else:
        at += 1
    if not line.startswith(" FROM stdin;", at):
        raise RuntimeFailure(f"The dump's line {line.strip()!r} cannot be read.")
    return names


def copy_rows(path: Path) -> tuple[list[str], Iterator[str]]:
    """The column names and the text-format rows of the one ``COPY`` block in ``path``."""
    lines = path.open(encoding="utf-8")
    for line in lines:
        if line.startswith("COPY "):
            names = copy_columns(line)

            def rows() -> Iterator[str]:
                with lines:
                    for row in lines:
                        if row == "\\.\n":
                            return
                        yield row

            return names, rows()
    lines.close()
    return [], iter(())


def table_columns(conn: psycopg.Connection[Any], ident: sql.Composable) -> list[str] | None:
    """The table's insertable columns in order; None when there is no such table."""
    name = ident.as_string(conn)
    exists = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
    if exists is None or exists[0] is None:
        return None
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
        "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        (name,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _load(
    conn: psycopg.Connection[Any],
    new: sql.Composable,
    dump_columns: list[str],
    mapped: list[str],
    rows: Iterator[str],
) -> int:
    """COPY the mapped fields of ``rows`` (text format, one row a line) into ``new``."""
    picks = [dump_columns.index(c) for c in mapped]
    whole = picks == list(range(len(dump_columns)))
    count = 0
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
        new, sql.SQL(", ").join(sql.Identifier(c) for c in mapped)
    )
    with conn.cursor().copy(copy) as out:
        for line in rows:
            if whole:
                out.write(line.encode())
            else:
                fields = line.rstrip("\n").split("\t")
                out.write(("\t".join(fields[i] for i in picks) + "\n").encode())
            count += 1
    return count


def _on_key(key: list[str]) -> sql.Composable:
    """``n.k = l.k AND ...``: a row of the restored rows (n) and of the live table (l)."""
    return sql.SQL(" AND ").join(sql.SQL("n.{c} = l.{c}").format(c=sql.Identifier(c)) for c in key)


def _replace(
    conn: psycopg.Connection[Any],
    live: sql.Composable,
    new: sql.Composable,
    columns: list[str],
    key: list[str],
) -> tuple[int, int]:
    """Make ``live`` hold exactly ``new``'s rows, by primary key; (deleted, upserted). Only the
    table's own rows: a dump holds an inheritance child's rows under the child's name.

    Writers wait meanwhile (an ``EXCLUSIVE`` lock: reads go on), so none commits a row in
    between; afterwards the table is compared with ``new``, so a trigger or rule that kept or
    changed rows (a soft delete) fails the restore instead of passing for it."""
    conn.execute("SET LOCAL lock_timeout = '30s'")  # a session holding the table: refused
    conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(live))
    match = _on_key(key)
    deleted = conn.execute(
        sql.SQL("DELETE FROM ONLY {} l WHERE NOT EXISTS (SELECT 1 FROM {} n WHERE {})").format(
            live, new, match
        )
    ).rowcount
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    # the key's columns too: a key equal to the dump's may still read differently ('alice'
    # and 'Alice' in citext, 1.0 and 1.00 in numeric), and the dump's is the one restored
    sets = (sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in columns)
    action = sql.SQL(
        "DO UPDATE SET {} WHERE (l.*)::text IS DISTINCT FROM (EXCLUDED.*)::text"
    ).format(sql.SQL(", ").join(sets))
    upserted = conn.execute(
        sql.SQL(
            "INSERT INTO {} AS l ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} ON CONFLICT ({}) {}"
        ).format(live, cols, cols, new, sql.SQL(", ").join(sql.Identifier(c) for c in key), action)
    ).rowcount
    _check_equal(conn, live, new, columns, key)
    return max(deleted, 0), max(upserted, 0)


class _Differs(Exception):
    """The live table does not hold the restored rows after the replace."""


def _check_equal(
    conn: psycopg.Connection[Any],
    live: sql.Composable,
    new: sql.Composable,
    columns: list[str],
    key: list[str],
) -> None:
    """Raise :class:`_Differs` unless ``live`` and ``new`` hold the same rows: matched by key,
    compared as text (a join on the key, as the upsert itself; no sort of wide rows)."""
    match = _on_key(key)

    def row(alias: str) -> sql.Composable:
        fields = (sql.Identifier(alias, c) for c in columns)
        return sql.SQL("ROW({})::text").format(sql.SQL(", ").join(fields))

    first = sql.Identifier(key[0])
    found = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM ONLY {} l FULL JOIN {} n ON {} WHERE l.{} IS NULL"
            " OR n.{} IS NULL OR {} IS DISTINCT FROM {}"
        ).format(live, new, match, first, first, row("l"), row("n"))
    ).fetchone()
    if found and found[0]:
        raise _Differs(
            f"after the replace the table still differs from the dump in {found[0]} rows "
            "(a trigger or rule on it keeps or changes rows)"
        )


def primary_key(conn: psycopg.Connection[Any], ident: sql.Composable) -> list[str]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(%s) AND i.indisprimary",
        (ident.as_string(conn),),
    ).fetchall()
    return [str(r[0]) for r in rows]


@dataclass
class CopyIn:
    """Where restored rows go in the live database, decided before any row is read."""

    live: sql.Identifier
    new: sql.Identifier
    live_columns: list[str]
    key: list[str]
    replace: bool


def plan_copy_in(
    conn: psycopg.Connection[Any],
    result: TableRestore,
    table: tuple[str, str],
    live_columns: list[str],
    new_name: str,
    *,
    replace: bool,
    force: bool,
) -> CopyIn:
    """Check the target name and the key of ``table`` (schema, name); nothing is written yet."""
    schema, name = table
    live = sql.Identifier(schema, name)
    new = sql.Identifier(schema, new_name)
    if replace:
        new = sql.Identifier(f"pgdr_replace_{name}")
        result.restored_as = result.table
    elif table_columns(conn, new) is not None and not force:
        raise ConfigError(f"{join_name(schema, new_name)} exists; pass --force to replace it.")
    key = primary_key(conn, live)
    if replace and not key:
        raise ConfigError(f"{result.table} has no primary key to match rows by.")
    return CopyIn(live, new, live_columns, key, replace)


def copy_in(
    conn: psycopg.Connection[Any],
    plan: CopyIn,
    result: TableRestore,
    source_columns: list[str],
    rows: Iterator[str],
) -> None:
    """The one copy-in step of both sources: the rows (text COPY lines of ``source_columns``)
    into a table like the live one, then (``replace``) the live table made equal to them, all
    in one transaction; a failure rolls everything back."""
    result.mapped = [c for c in source_columns if c in plan.live_columns]
    result.unmapped = [c for c in source_columns if c not in plan.live_columns]
    result.defaulted = [c for c in plan.live_columns if c not in source_columns]
    conn.execute("SET default_transaction_read_only = off")  # works in read-only mode
    try:
        with conn.transaction():
            # rows are compared as text (the upsert, the check after it): every digit of a float
            conn.execute("SET LOCAL extra_float_digits = 3")
            if not plan.replace:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(plan.new))
            temp = sql.SQL("TEMP ") if plan.replace else sql.SQL("")
            conn.execute(
                sql.SQL("CREATE {}TABLE {} (LIKE {} INCLUDING ALL)").format(
                    temp, plan.new, plan.live
                )
            )
            result.rows = _load(conn, plan.new, source_columns, result.mapped, rows)
            if plan.replace:
                result.deleted, result.upserted = _replace(
                    conn, plan.live, plan.new, result.mapped, plan.key
                )
                conn.execute(sql.SQL("DROP TABLE {}").format(plan.new))
                result.replaced = True
    except (psycopg.Error, _Differs) as exc:
        raise RuntimeFailure(
            f"Restoring {result.table} from {result.source} failed and was rolled back, "
            f"nothing changed: {str(exc).strip().splitlines()[0]}"
        ) from exc


def check_replace_options(as_name: str | None, replace: bool, force: bool) -> None:
    if replace and not force:
        raise ConfigError("--replace overwrites the live table's rows; add --force to confirm.")
    if replace and as_name:
        raise ConfigError("Give --as or --replace, not both.")


def restore_table(
    repo: Repository,
    conninfo: str,
    table: str,
    dump_id: str,
    *,
    as_name: str | None = None,
    replace: bool = False,
    force: bool = False,
) -> TableRestore:
    """Restore ``table`` from a dump beside the live table (or in its place with ``replace``)."""
    began = time.monotonic()
    check_replace_options(as_name, replace, force)
    schema, name = split_table_name(table)
    dump = open_dump(repo, dump_id, latest_of=("dump",))  # the latest with rows
    with connect(conninfo, autocommit=True, raw_errors=True) as conn:
        _check_same_database(dump, conn)
        table_entry, data_entry = _entries(dump, schema, name)
        live_columns = table_columns(conn, sql.Identifier(schema, name))
        if live_columns is None:
            entries = f"{table_entry.line}\n{data_entry.line}\n"
            return _restore_dropped(dump, conninfo, conn, (schema, name), entries, as_name, force)
        new_name = beside_name(name, dump.id, as_name)
        result = TableRestore(join_name(schema, name), join_name(schema, new_name), dump.id)
        plan = plan_copy_in(
            conn, result, (schema, name), live_columns, new_name, replace=replace, force=force
        )
        with private_dir("pgdr-table-") as tmp:
            (tmp / "list").write_text(data_entry.line + "\n")
            feed_pg_restore(dump, ["-L", str(tmp / "list"), "-f", str(tmp / "rows")], tmp / "out")
            dump_columns, rows = copy_rows(tmp / "rows")
            copy_in(conn, plan, result, dump_columns, rows)
    result.duration_s = round(time.monotonic() - began, 3)
    return result


def rename_and_count(
    conn: psycopg.Connection[Any], schema: str, name: str, as_name: str | None
) -> int:
    """A table just brought back under ``name``: renamed to ``as_name`` if given; its rows."""
    if as_name:
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(schema, name), sql.Identifier(as_name)
            )
        )
    final = sql.Identifier(schema, as_name or name)
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(final)).fetchone()
    return int(count[0]) if count else 0


def _restore_dropped(
    dump: OpenDump,
    conninfo: str,
    conn: psycopg.Connection[Any],
    qualified: tuple[str, str],
    entries: str,
    as_name: str | None,
    force: bool,
) -> TableRestore:
    """The table is gone from the live database: its definition and rows from the dump."""
    began = time.monotonic()
    schema, name = qualified
    if as_name and table_columns(conn, sql.Identifier(schema, as_name)) is not None:
        raise ConfigError(f"{join_name(schema, as_name)} exists; choose another --as.")
    client, env = client_environment(conninfo)
    with private_dir("pgdr-table-") as tmp:
        (tmp / "list").write_text(entries)
        args = [
            "-L",
            str(tmp / "list"),
            "--no-owner",
            "--single-transaction",
            "--exit-on-error",
            "-d",
            client,
        ]
        feed_pg_restore(dump, args, tmp / "out", env=env)
    result = TableRestore(join_name(schema, name), join_name(schema, as_name or name), dump.id)
    result.rows = rename_and_count(conn, schema, name, as_name)
    result.notes.append(
        f"{join_name(schema, name)} did not exist in the database: it was created from the dump's "
        "definition (without its indexes, constraints and triggers) with the dump's rows."
    )
    result.duration_s = round(time.monotonic() - began, 3)
    return result
