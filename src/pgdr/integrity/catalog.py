"""What the database itself says: tables, columns and their types, keys, foreign keys, grants.

Read once per run with a handful of catalog queries, so every check can resolve the profile's
names, find every foreign key (including NOT VALID ones) and know what the role may read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgdr.core.names import join_name, qualified_name

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


@dataclass(frozen=True)
class Column:
    name: str
    type_name: str  # pg_type.typname: "vector", "_float4", "timestamptz", ...
    type_schema: str
    formatted: str  # format_type(): "extensions.vector(1536)", "real[]", ...
    storage: str = "x"  # attstorage: p plain, e external, m main, x extended (compressible)

    @property
    def compressible(self) -> bool:
        return self.storage in ("m", "x")


@dataclass
class TableInfo:
    schema: str
    name: str
    readable: bool
    columns: dict[str, Column] = field(default_factory=dict)
    primary_key: list[str] = field(default_factory=list)
    unique_keys: list[frozenset[str]] = field(default_factory=list)
    options: list[str] = field(default_factory=list)  # reloptions, "toast_tuple_target=4000"

    @property
    def qualified(self) -> str:
        return join_name(self.schema, self.name)

    def is_unique(self, columns: list[str]) -> bool:
        wanted = frozenset(columns)
        return any(key <= wanted for key in self.unique_keys)


@dataclass(frozen=True)
class ForeignKey:
    name: str
    child: str  # qualified, as join_name writes it
    child_columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    validated: bool


@dataclass
class Catalog:
    server_version: int
    role: str
    tables: dict[str, TableInfo]
    foreign_keys: list[ForeignKey]
    extensions: dict[str, str]  # name -> schema

    def find(self, name: str, default_schema: str) -> TableInfo | None:
        return self.tables.get(qualified_name(name, default_schema))

    @property
    def has_pgvector(self) -> bool:
        return "vector" in self.extensions


_TABLES = """
SELECT n.nspname, c.relname, has_table_privilege(c.oid, 'SELECT'), c.reloptions,
       a.attname, t.typname, tn.nspname, format_type(a.atttypid, a.atttypmod), a.attstorage
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_namespace tn ON tn.oid = t.typnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg_temp%%'
ORDER BY n.nspname, c.relname, a.attnum
"""

_KEYS = """
SELECT n.nspname, c.relname, i.indisprimary,
       ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum ORDER BY k.ord)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
  AND n.nspname <> ALL(%s)
"""

_FOREIGN_KEYS = """
SELECT con.conname, cn.nspname, c.relname, pn.nspname, p.relname,
       con.convalidated,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
             ORDER BY k.ord),
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
             ORDER BY k.ord)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class p ON p.oid = con.confrelid
JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE con.contype = 'f' AND con.conparentid = 0 AND NOT c.relispartition
  AND cn.nspname <> ALL(%s)
ORDER BY 2, 3, 1
"""


def read_catalog(conn: psycopg.Connection[Any]) -> Catalog:
    """Everything the checks need to know about the schema, in four queries."""
    system = list(SYSTEM_SCHEMAS)
    tables: dict[str, TableInfo] = {}
    for (
        schema,
        name,
        readable,
        options,
        col,
        typname,
        typschema,
        formatted,
        storage,
    ) in conn.execute(_TABLES, (system,)):
        info = tables.setdefault(
            join_name(schema, name), TableInfo(schema, name, bool(readable), options=options or [])
        )
        info.columns[col] = Column(col, typname, typschema, formatted, str(storage))
    for schema, name, primary, columns in conn.execute(_KEYS, (system,)):
        found = tables.get(join_name(schema, name))
        if found is None:
            continue
        found.unique_keys.append(frozenset(columns))
        if primary:
            found.primary_key = list(columns)
    fks = [
        ForeignKey(name, join_name(cs, cn), tuple(ccols), join_name(ps, pn), tuple(pcols), valid)
        for name, cs, cn, ps, pn, valid, ccols, pcols in conn.execute(_FOREIGN_KEYS, (system,))
    ]
    extensions = {
        str(name): str(schema)
        for name, schema in conn.execute(
            "SELECT e.extname, n.nspname FROM pg_extension e "
            "JOIN pg_namespace n ON n.oid = e.extnamespace"
        )
    }
    row = conn.execute("SELECT current_setting('server_version_num')::int, current_user").fetchone()
    assert row is not None
    return Catalog(int(row[0]), str(row[1]), tables, fks, extensions)
