"""Re-inserting chosen rows, and every row that depends on them, from a recovered copy.

The runbook's alternative to a full restore after an accidental deletion: restore to just before
it somewhere else, then put back exactly the deleted rows. ``recover_rows`` chooses the rows of
one table by key in the source (a scratch cluster restored to a point), follows every foreign key
that points at them through the source's catalog (children, grandchildren, ...), and streams all
of it into the target in dependency order (parents first) in one transaction, ``ON CONFLICT DO
NOTHING``: rows that still exist are left as they are (:mod:`pgdr.restore.selection`: batched
key lookups in one snapshot, ``COPY`` in text form, so vectors and arrays come back exactly).
The target's session turns ``default_transaction_read_only`` off for itself, so the recovery
works while the database is in read-only mode (which is when it should run).

``repair_tables`` is the table-wide variant for corruption (the runbook's option B): every row
of the copy that is missing from the target or differs is put back, by primary key, and rows
written to the target later are kept (each table streamed by ``COPY`` from one snapshot).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import IsolationLevel, sql

from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.core.names import split_table_name
from pgdr.integrity.catalog import TableInfo, read_catalog
from pgdr.pool import connect
from pgdr.restore.selection import (
    ON_CONFLICT_KEEP,
    Selection,
    copy_rows,
    dependency_order,
    select_rows,
    write_selection,
)


@dataclass
class TableRows:
    table: str
    found: int
    inserted: int = 0

    @property
    def already_present(self) -> int:
        return self.found - self.inserted


@dataclass
class RowsResult:
    table: str
    keys: list[str]
    tables: list[TableRows] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def found(self) -> int:
        return sum(t.found for t in self.tables)

    @property
    def inserted(self) -> int:
        return sum(t.inserted for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "keys": self.keys,
            "tables": [asdict(t) | {"already_present": t.already_present} for t in self.tables],
            "found": self.found,
            "inserted": self.inserted,
            "duration_s": round(self.duration_s, 3),
        }


@contextmanager
def row_errors() -> Iterator[None]:
    """Putting rows back failed: one sentence saying why, and that nothing was inserted."""
    try:
        yield
    except psycopg.errors.ForeignKeyViolation as exc:
        raise RuntimeFailure(
            "The rows reference rows that are missing from the target too "
            f"({exc.diag.message_detail or exc}); recover their parents first. Nothing was "
            "inserted."
        ) from exc
    except psycopg.errors.UndefinedTable as exc:
        raise RuntimeFailure(
            f"A table of the source is missing from the target: {exc}. Nothing was inserted."
        ) from exc
    except psycopg.OperationalError as exc:
        raise RuntimeFailure(f"Cannot reach a database: {str(exc).strip()}.") from exc


def recover_rows(
    source_url: str,
    target_url: str,
    table: str,
    keys: list[str],
    *,
    key_column: str | None = None,
    with_children: bool = False,
) -> RowsResult:
    """Copy the rows of ``table`` with these keys (and their FK descendants) from source to
    target, leaving rows that exist in the target untouched."""
    began = time.monotonic()
    if not keys:
        raise ConfigError("Give at least one --key.")
    with (
        row_errors(),
        connect(source_url, autocommit=True) as src,
        connect(target_url, autocommit=True) as dst,
    ):
        src.isolation_level, src.read_only = IsolationLevel.REPEATABLE_READ, True
        with src.transaction():
            found = choose_rows(src, table, keys, key_column, with_children)
            if not found.ctids[found.table.qualified]:
                raise RuntimeFailure(
                    f"No row of {found.table.qualified} with {found.key_column} in "
                    f"({', '.join(keys)}) exists in the source; is it restored to a moment "
                    "before the deletion?"
                )
            inserted = write_selection(src, dst, found)
    counts = found.counts()
    tables = [TableRows(t, counts[t], inserted.get(t, 0)) for t in found.order]
    return RowsResult(found.table.qualified, list(keys), tables, time.monotonic() - began)


def choose_rows(
    src: psycopg.Connection[Any],
    table: str,
    keys: list[str],
    key_column: str | None,
    with_children: bool,
    *,
    missing: str = "does not exist in the source database",
) -> Selection:
    """The chosen rows (and their descendants) in the source's current transaction; ``missing``
    ends the sentence refusing a table the source does not have."""
    catalog = read_catalog(src)
    info = catalog.find(table, "public")
    if info is None:
        raise ConfigError(f"Table {table} {missing}.")
    column = _key_column(info, key_column)
    try:
        return select_rows(src, catalog, info, column, keys, with_children)
    except psycopg.errors.DataError as exc:
        raise ConfigError(
            f"A --key value does not fit {info.qualified}.{column} "
            f"({info.columns[column].formatted}): {exc.diag.message_primary}."
        ) from exc


def _key_column(info: TableInfo, key_column: str | None) -> str:
    """The column the keys match: the one given, else the single-column primary key."""
    if key_column is None:
        if len(info.primary_key) != 1:
            raise ConfigError(
                f"{info.qualified} has no single-column primary key; name the column "
                "with --key-column."
            )
        key_column = info.primary_key[0]
    if key_column not in info.columns:
        raise ConfigError(f"{info.qualified} has no column {key_column!r}.")
    return key_column


def repair_tables(source_url: str, target_url: str, tables: list[str]) -> list[TableRows]:
    """Make every row of ``tables`` that exists in the source equal to the source's row.

    Missing rows are inserted and differing rows updated, parents first, in one transaction;
    rows that exist only in the target (written after the source's moment) are kept. This is
    the runbook's "restore specific tables" without losing the table's later rows. Rows of
    these tables changed after the source's moment go back to the source's version. Each table
    needs a primary key; the whole table is streamed from one snapshot of the source by
    ``COPY`` (never decoded in Python) into a temporary table, then upserted.
    """
    try:
        with (
            connect(source_url, autocommit=True) as src,
            connect(target_url, autocommit=True) as dst,
        ):
            src.execute("SET default_transaction_read_only = on")
            infos, order = _repaired_tables(src, tables)
            keys = {i.qualified: i.primary_key for i in infos}
            dst.execute("SET default_transaction_read_only = off")
            counts: dict[str, tuple[int, int]] = {}
            src.isolation_level = IsolationLevel.REPEATABLE_READ
            with src.transaction(), dst.transaction():
                for number, table in enumerate(order):
                    counts[table] = copy_rows(
                        src, dst, table, number, _own_rows(table), _upsert(keys[table])
                    )
    except psycopg.errors.ForeignKeyViolation as exc:
        raise RuntimeFailure(
            f"The repaired rows reference rows missing from the target ({exc}); repair their "
            "tables too. Nothing was changed."
        ) from exc
    except psycopg.OperationalError as exc:
        raise RuntimeFailure(f"Cannot reach a database: {str(exc).strip()}.") from exc
    return [TableRows(t, counts[t][0], counts[t][1]) for t in order]


def _repaired_tables(
    src: psycopg.Connection[Any], tables: list[str]
) -> tuple[list[TableInfo], list[str]]:
    """The tables' catalog entries (each needs a primary key) and the order to write them in
    (parents first)."""
    catalog = read_catalog(src)
    infos = []
    for name in tables:
        info = catalog.find(name, "public")
        if info is None:
            raise ConfigError(f"Table {name} does not exist in the source database.")
        if not info.primary_key:
            raise ConfigError(f"{info.qualified} has no primary key to match rows by.")
        infos.append(info)
    return infos, dependency_order(catalog, [i.qualified for i in infos])


def _own_rows(table: str) -> sql.Composable:
    """``WHERE`` the rows of ``table`` itself and of its partitions, not of its inheritance
    children: upserted through the parent, their rows would land in the parent beside the
    child's own, where no key of the parent keeps them out (a child is a table to name too)."""
    schema, name = split_table_name(table)
    relation = sql.SQL("to_regclass(quote_ident({}) || '.' || quote_ident({}))").format(
        sql.Literal(schema), sql.Literal(name)
    )
    return sql.SQL(
        " WHERE tableoid IN (SELECT {r} UNION SELECT relid FROM pg_partition_tree({r}))"
    ).format(r=relation)


def _upsert(key: list[str]) -> Callable[[list[str]], sql.Composable]:
    """The conflict clause: update the rows that differ (matched by primary key ``key``)."""

    def clause(columns: list[str]) -> sql.Composable:
        updates = [c for c in columns if c not in key]
        if not updates:
            return ON_CONFLICT_KEEP
        return sql.SQL(
            "ON CONFLICT ({k}) DO UPDATE SET {u} WHERE (old.*)::text IS DISTINCT FROM "
            "(EXCLUDED.*)::text"
        ).format(
            k=sql.SQL(", ").join(sql.Identifier(c) for c in key),
            u=sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updates
            ),
        )

    return clause
