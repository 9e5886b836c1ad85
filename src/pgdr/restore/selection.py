"""Choosing rows in a restored copy, with everything that references them, and streaming them
into the target.

:func:`select_rows` finds, in one snapshot of the source, the rows of a table with the given
keys and (``with_children``) every row that references them through foreign keys, children and
grandchildren. Each row is remembered by its table's oid and its ``ctid``, which cannot change
while the snapshot is open (the caller holds one ``REPEATABLE READ`` transaction for the
selection and the copy); a ``ctid`` alone is unique only within one table, and each partition
(or inheritance child) of a table has its own. Only the columns that children reference are
read. One query per table and foreign key: the keys of a level travel as one array (``(cols)
IN (SELECT * FROM unnest(...))``), never one query per key.

:func:`write_selection` then streams each table's chosen rows, parents first, from the
source's ``COPY (SELECT ... WHERE tableoid = ... AND ctid = ANY(...)) TO STDOUT`` into a
temporary table of the target (``COPY ... FROM STDIN``, text format: portable across major
versions) and inserts them ``ON CONFLICT DO NOTHING``, all in one target transaction. Rows are
never decoded in Python, so a thousand chatbots with their embeddings cost what the rows weigh.
Columns are matched by name: a column only the source has is not copied, one only the target
has gets its default.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.core.names import join_name, split_table_name
from pgdr.integrity.catalog import Catalog, TableInfo

Found = list[tuple[str, dict[str, str | None]]]  # ("oid:ctid", referenced column -> value)


@dataclass
class Selection:
    """The chosen rows of each table ("oid:ctid" of the partition or table holding each, in the
    source's snapshot), parents first."""

    table: TableInfo
    key_column: str
    ctids: dict[str, list[str]]
    order: list[str]

    def counts(self) -> dict[str, int]:
        return {t: len(self.ctids[t]) for t in self.order}


def identifier(table: str) -> sql.Identifier:
    """A table as pgdr keys it (``join_name``) as a qualified identifier."""
    return sql.Identifier(*split_table_name(table))


def insertable_columns(conn: psycopg.Connection[Any], table: str, side: str) -> list[str]:
    """The columns of ``table`` (as ``join_name`` writes it) on the ``side`` it is read from."""
    schema, name = split_table_name(table)
    rows = conn.execute(
        "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
        "AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
        (schema, name),
    ).fetchall()
    if not rows:
        raise RuntimeFailure(f"Table {table} is missing from the {side}. Nothing was changed.")
    return [str(r[0]) for r in rows]


def _select(
    conn: psycopg.Connection[Any],
    info: TableInfo,
    match: list[str],
    values: list[list[str]],
    wanted: list[str],
) -> Found:
    """The "oid:ctid" and ``wanted`` columns (as text) of the rows whose ``match`` columns equal
    one of ``values``."""
    if not values:
        return []
    picked = [sql.SQL("t.tableoid::oid::text || ':' || t.ctid::text")] + [
        sql.SQL("t.{}::text").format(sql.Identifier(c)) for c in wanted
    ]
    arrays = sql.SQL(", ").join(
        sql.SQL("%s::{}[]").format(sql.SQL(info.columns[c].formatted)) for c in match
    )
    query = sql.SQL("SELECT {} FROM {} AS t WHERE ({}) IN (SELECT * FROM unnest({}))").format(
        sql.SQL(", ").join(picked),
        sql.Identifier(info.schema, info.name),
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in match),
        arrays,
    )
    params = [[v[i] for v in values] for i in range(len(match))]
    return [(str(r[0]), dict(zip(wanted, r[1:], strict=True))) for r in conn.execute(query, params)]


def _referenced(catalog: Catalog) -> dict[str, list[str]]:
    """Per table, the columns some foreign key points at (what its children match on)."""
    columns: dict[str, list[str]] = {}
    for fk in catalog.foreign_keys:
        bucket = columns.setdefault(fk.parent, [])
        bucket.extend(c for c in fk.parent_columns if c not in bucket)
    return columns


def select_rows(
    conn: psycopg.Connection[Any],
    catalog: Catalog,
    info: TableInfo,
    key_column: str,
    keys: list[str],
    with_children: bool,
) -> Selection:
    """The rows of ``info`` whose ``key_column`` is one of ``keys`` and (``with_children``)
    every row reachable through foreign keys to them. ``conn`` must stay in one transaction
    (REPEATABLE READ) until the rows are written: the ctids belong to its snapshot."""
    referenced = _referenced(catalog) if with_children else {}
    chosen: dict[str, dict[str, None]] = {}
    found: list[str] = []

    def add(table: TableInfo, rows: Found) -> list[dict[str, str | None]]:
        bucket = chosen.setdefault(table.qualified, {})
        if table.qualified not in found:
            found.append(table.qualified)
        new = [values for ctid, values in rows if ctid not in bucket]
        bucket.update(dict.fromkeys(ctid for ctid, _values in rows))
        return new

    first = _select(
        conn, info, [key_column], [[k] for k in keys], referenced.get(info.qualified, [])
    )
    queue = deque([(info.qualified, add(info, first))])
    while queue and with_children:
        parent, rows = queue.popleft()
        for fk in catalog.foreign_keys:
            if fk.parent != parent or not rows:
                continue
            child = catalog.tables[fk.child]
            values = [
                [str(row[c]) for c in fk.parent_columns]
                for row in rows
                if all(row[c] is not None for c in fk.parent_columns)
            ]
            wanted = referenced.get(child.qualified, [])
            new = add(child, _select(conn, child, list(fk.child_columns), values, wanted))
            if new:
                queue.append((child.qualified, new))
    ctids = {t: list(chosen[t]) for t in found}
    return Selection(info, key_column, ctids, dependency_order(catalog, found))


def dependency_order(catalog: Catalog, tables: list[str]) -> list[str]:
    """Parents before children among ``tables`` (self-references ignored; a cycle keeps the
    order in which the tables were found)."""
    wanted = set(tables)
    parents = {
        t: {fk.parent for fk in catalog.foreign_keys if fk.child == t and fk.parent in wanted} - {t}
        for t in tables
    }
    ordered: list[str] = []
    remaining = list(tables)
    while remaining:
        ready = [t for t in remaining if parents[t] <= set(ordered)]
        if not ready:
            return ordered + remaining
        ordered.append(ready[0])
        remaining.remove(ready[0])
    return ordered


def write_selection(
    src: psycopg.Connection[Any], dst: psycopg.Connection[Any], selection: Selection
) -> dict[str, int]:
    """Stream the chosen rows from ``src`` (still in the selection's snapshot) into ``dst``,
    parents first, in one transaction, even in read-only mode; rows present in ``dst`` are left
    as they are. Returns the rows inserted per table. ``dst`` must be in autocommit mode."""
    places = _destinations(src, selection)
    missing, keyless = _unfit_targets(dst, list(dict.fromkeys(into for _t, into, _r in places)))
    if missing:
        raise RuntimeFailure(f"Table {missing[0]} is missing from the target. Nothing was changed.")
    if keyless:
        raise ConfigError(
            f"Table {keyless[0]} has no primary key or unique constraint in the target, so its "
            "rows that still exist cannot be told from those to bring back; nothing was changed."
        )
    inserted = dict.fromkeys(selection.order, 0)
    dst.execute("SET default_transaction_read_only = off")
    with dst.transaction():
        for number, (table, into, rows) in enumerate(places):
            _copied, written = copy_rows(src, dst, into, number, _where(rows), _keep)
            inserted[table] += written
    return inserted


def _destinations(
    src: psycopg.Connection[Any], selection: Selection
) -> list[tuple[str, str, list[str]]]:
    """(table, where its rows go back, those rows), parents first. A partition's rows go through
    their table, which routes them (and whose partitions' keys keep out those present); an
    inheritance child's rows go back into that child: inserted through the parent they would
    stay in the parent, beside the child's rows, where no key of the child keeps them out."""
    oids = sorted({row.split(":", 1)[0] for rows in selection.ctids.values() for row in rows})
    children = {
        str(oid): join_name(schema, name)
        for oid, schema, name in src.execute(
            "SELECT c.oid::text, n.nspname, c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = ANY(%s::oid[]) AND NOT c.relispartition",
            (oids,),
        )
    }
    places: list[tuple[str, str, list[str]]] = []
    for table in selection.order:
        by_place: dict[str, list[str]] = {}
        for row in selection.ctids[table]:
            by_place.setdefault(children.get(row.split(":", 1)[0], table), []).append(row)
        places.extend((table, into, rows) for into, rows in by_place.items())
    return places


def _unfit_targets(conn: psycopg.Connection[Any], tables: list[str]) -> tuple[list[str], list[str]]:
    """Those of ``tables`` (as ``join_name`` writes them) missing from the target, and those
    without a key that keeps out a row present: a primary key or a unique constraint on columns
    that are all ``NOT NULL`` (rows with a NULL in a unique column are never in conflict), on the
    table or,
    for a partitioned table, on every one of its partitions (each partition's own keys keep
    out the rows routed to it)."""
    parts = [split_table_name(table) for table in tables]
    rows = conn.execute(
        "WITH keyed AS (SELECT DISTINCT i.indrelid AS oid FROM pg_index i WHERE i.indisunique"
        " AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indimmediate AND NOT EXISTS"
        " (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indrelid"
        " AND a.attnum = ANY(i.indkey) AND NOT a.attnotnull))"
        " SELECT u.n, c.oid IS NULL FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY"
        " AS u(s, t, n) LEFT JOIN (pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace)"
        " ON s.nspname = u.s AND c.relname = u.t AND c.relkind IN ('r', 'p')"
        " WHERE c.oid IS NULL OR (c.oid NOT IN (SELECT oid FROM keyed) AND (c.relkind = 'r'"
        " OR EXISTS (SELECT 1 FROM pg_partition_tree(c.oid) p WHERE p.isleaf"
        " AND p.relid NOT IN (SELECT oid FROM keyed)))) ORDER BY u.n",
        ([p[0] for p in parts], [p[1] for p in parts]),
    ).fetchall()
    missing = [tables[int(r[0]) - 1] for r in rows if r[1]]
    return missing, [tables[int(r[0]) - 1] for r in rows if not r[1]]


def _where(rows: list[str]) -> sql.Composable:
    """``WHERE`` these rows ("oid:ctid"): per partition, its own ctids (a TID scan each)."""
    by_table: dict[str, list[str]] = {}
    for row in rows:
        oid, ctid = row.split(":", 1)
        by_table.setdefault(oid, []).append(ctid)
    arms = [
        sql.SQL("(tableoid = {}::oid AND ctid = ANY({}::tid[]))").format(
            sql.Literal(oid), sql.Literal("{" + ",".join(f'"{c}"' for c in tids) + "}")
        )
        for oid, tids in by_table.items()
    ]
    return sql.SQL(" WHERE ") + sql.SQL(" OR ").join(arms)


ON_CONFLICT_KEEP = sql.SQL("ON CONFLICT DO NOTHING")


def _keep(_columns: list[str]) -> sql.Composable:
    return ON_CONFLICT_KEEP


def copy_rows(
    src: psycopg.Connection[Any],
    dst: psycopg.Connection[Any],
    table: str,
    number: int,
    where: sql.Composable,
    conflict: Callable[[list[str]], sql.Composable],
) -> tuple[int, int]:
    """Stream ``table``'s rows matching ``where`` from ``src`` into a temporary table of ``dst``
    (text ``COPY``, never decoded in Python), then insert them into the live table with the
    ``conflict`` clause made for the copied columns. Returns (rows copied, rows written)."""
    source_columns = set(insertable_columns(src, table, "source"))
    columns = [c for c in insertable_columns(dst, table, "target") if c in source_columns]
    names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    live, temp = identifier(table), sql.Identifier(f"pgdr_rows_{number}")
    dst.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(temp, live))
    out = sql.SQL("COPY (SELECT {} FROM {}{}) TO STDOUT").format(names, live, where)
    into = sql.SQL("COPY {} ({}) FROM STDIN").format(temp, names)
    with src.cursor().copy(out) as reader, dst.cursor().copy(into) as writer:
        for data in reader:
            writer.write(data)
    counted = dst.execute(sql.SQL("SELECT count(*) FROM {}").format(temp)).fetchone()
    cur = dst.execute(
        sql.SQL("INSERT INTO {} AS old ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} {}").format(
            live, names, names, temp, conflict(columns)
        )
    )
    return (int(counted[0]) if counted else 0), max(cur.rowcount, 0)
