"""An embedding source as the database sees it: its table, key type, vector column and dimension.

The profile says which table and columns hold the text and the vector; :func:`resolve_source`
asks the catalog for the rest (the key's type, the vector column's exact type and declared
dimension) so every later statement casts correctly, wherever the vector extension lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgdr.core.errors import ConfigError
from pgdr.profile import EmbeddingSource
from pgdr.profile.required import required_sql


@dataclass(frozen=True)
class ResolvedSource:
    spec: EmbeddingSource
    schema: str
    key_type: str
    group_type: str | None
    vector_type: str
    dimension: int
    status_key_type: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def table(self) -> sql.Composable:
        """The table, unaliased so profile expressions like ``embeddings.chatbot_id`` work."""
        return sql.Identifier(self.schema, self.spec.table)

    @property
    def label(self) -> str:
        return f"{self.spec.table}.{self.spec.vector}"

    def col(self, name: str) -> sql.Composable:
        return sql.SQL("{}.{}").format(sql.Identifier(self.spec.table), sql.Identifier(name))

    @property
    def key(self) -> sql.Composable:
        return self.col(self.spec.key)

    @property
    def vector(self) -> sql.Composable:
        return self.col(self.spec.vector)

    @property
    def group(self) -> sql.Composable:
        return self.col(self.spec.group_by) if self.spec.group_by else sql.SQL("NULL")

    @property
    def text(self) -> sql.Composable:
        return sql.SQL("(" + self.spec.text + ")::text")

    @property
    def filter(self) -> sql.Composable:
        return sql.SQL("(" + self.spec.filter + ")") if self.spec.filter else sql.SQL("true")

    @property
    def required(self) -> sql.Composable:
        return sql.SQL(required_sql(self.spec))


def _column_type(
    conn: psycopg.Connection[Any], schema: str, table: str, column: str
) -> tuple[str, str, int] | None:
    row = conn.execute(
        "SELECT format_type(a.atttypid, a.atttypmod), t.typname, a.atttypmod "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s AND a.attnum > 0 "
        "AND NOT a.attisdropped",
        (schema, table, column),
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]), int(row[2]))


def resolve_source(
    conn: psycopg.Connection[Any], spec: EmbeddingSource, schema: str = "public"
) -> ResolvedSource:
    """Check the source's table and columns exist and read their types from the catalog."""
    where = f"{schema}.{spec.table}"
    key = _column_type(conn, schema, spec.table, spec.key)
    if key is None:
        raise ConfigError(
            f"Embedding source {spec.name!r}: table {where} or its key column {spec.key!r} "
            "does not exist."
        )
    vector = _column_type(conn, schema, spec.table, spec.vector)
    if vector is None:
        raise ConfigError(
            f"Embedding source {spec.name!r}: {where} has no column {spec.vector!r} "
            "(if migration 005 dropped it, recreate it before re-embedding)."
        )
    vector_type, typname, typmod = vector
    if typname != "vector":
        raise ConfigError(
            f"Embedding source {spec.name!r}: {where}.{spec.vector} is {vector_type}; "
            "pgdr reembed writes pgvector columns (vector(n)) only."
        )
    dimension = typmod if typmod > 0 else spec.dimension
    if typmod > 0 and typmod != spec.dimension:
        raise ConfigError(
            f"Embedding source {spec.name!r}: the profile says {spec.dimension} dimensions but "
            f"{where}.{spec.vector} is {vector_type}."
        )
    group_type = None
    if spec.group_by:
        group = _column_type(conn, schema, spec.table, spec.group_by)
        if group is None:
            raise ConfigError(
                f"Embedding source {spec.name!r}: {where} has no column {spec.group_by!r}."
            )
        group_type = group[0]
    status_key_type = None
    if spec.status is not None:
        st = spec.status
        status_key = _column_type(conn, schema, st.table, st.key)
        if status_key is None or _column_type(conn, schema, st.table, st.column) is None:
            raise ConfigError(
                f"Embedding source {spec.name!r}: status table {schema}.{st.table} with columns "
                f"{st.key!r} and {st.column!r} does not exist."
            )
        status_key_type = status_key[0]
    return ResolvedSource(spec, schema, key[0], group_type, vector_type, dimension, status_key_type)
