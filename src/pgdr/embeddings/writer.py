"""Reading a batch's texts and writing its vectors back in bulk.

A batch's texts come out in one query that also computes each text's SHA-256 and looks it up in
the content-hash cache. Its vectors go back with one binary ``COPY`` into a temporary staging
table and one ``UPDATE ... FROM`` that takes each row's vector from the stage (fresh from the
provider) or from the cache; never one ``UPDATE`` per row.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from pgdr.embeddings.providers import Vector
from pgdr.embeddings.source import ResolvedSource

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
COPY_TRAILER = struct.pack("!h", -1)


@dataclass
class BatchRow:
    key: str
    text: str | None  # None for cache hits (the text is not needed) or NULL text
    sha: bytes | None
    hit: bool


def _stage_name(src: ResolvedSource) -> sql.Identifier:
    return sql.Identifier(f"pgdr_stage_{src.name}")


def fetch_batch(
    conn: psycopg.Connection[Any],
    src: ResolvedSource,
    keys: Sequence[str],
    model: str,
    use_cache: bool,
) -> list[BatchRow]:
    """The batch's rows that still exist: text (unless cached), its SHA-256, cache hit or not."""
    cache = (
        sql.SQL(
            "LEFT JOIN pgdr.embedding_cache c ON c.model = {m} AND c.dimension = {d} "
            "AND c.sha256 = s.sha"
        ).format(m=sql.Literal(model), d=sql.Literal(src.dimension))
        if use_cache
        else sql.SQL("LEFT JOIN (SELECT NULL::bytea AS sha256) c ON false")
    )
    query = sql.SQL(
        "SELECT s.k, CASE WHEN c.sha256 IS NULL THEN s.txt END, s.sha, c.sha256 IS NOT NULL "
        "FROM (SELECT {key}::text AS k, {text} AS txt, "
        "sha256(convert_to({text}, 'UTF8')) AS sha FROM {table} "
        "WHERE {key} = ANY(%s::text[]::{key_type}[])) s {cache}"
    ).format(
        key=src.key,
        text=src.text,
        table=src.table,
        key_type=sql.SQL(src.key_type),
        cache=cache,
    )
    rows = conn.execute(query, (list(keys),)).fetchall()
    return [
        BatchRow(str(r[0]), r[1], bytes(r[2]) if r[2] is not None else None, r[3]) for r in rows
    ]


def _encode_vector(vec: Vector) -> bytes:
    return struct.pack("!hh", len(vec), 0) + vec.astype(">f4").tobytes()


def encode_copy(rows: Sequence[tuple[str, bytes | None, Vector | None]]) -> bytes:
    """A binary COPY stream of (key text, sha bytea, vector) rows."""
    parts = [COPY_HEADER]
    three = struct.pack("!h", 3)
    null = struct.pack("!i", -1)
    for key, sha, vec in rows:
        k = key.encode("utf-8")
        parts.append(three + struct.pack("!i", len(k)) + k)
        parts.append(null if sha is None else struct.pack("!i", len(sha)) + sha)
        if vec is None:
            parts.append(null)
        else:
            v = _encode_vector(np.asarray(vec, dtype=np.float32))
            parts.append(struct.pack("!i", len(v)) + v)
    parts.append(COPY_TRAILER)
    return b"".join(parts)


def write_batch(
    conn: psycopg.Connection[Any],
    src: ResolvedSource,
    staged: Sequence[tuple[str, bytes | None, Vector | None]],
    model: str,
    use_cache: bool,
) -> set[str]:
    """Write fresh vectors and cache hits for ``staged`` rows; the keys actually updated.

    Rows deleted since the batch was read are simply not updated (and not returned). Fresh
    vectors also go into the cache, so the same text is never sent to the provider again.
    Runs inside the caller's transaction.
    """
    if not staged:
        return set()
    stage = _stage_name(src)
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (k text, sha bytea, v {}) ON COMMIT DELETE ROWS"
        ).format(stage, sql.SQL(src.vector_type))
    )
    with (
        conn.cursor() as cur,
        cur.copy(
            sql.SQL("COPY {} (k, sha, v) FROM STDIN WITH (FORMAT BINARY)").format(stage)
        ) as copy,
    ):
        copy.write(encode_copy(staged))
    from_cache = (
        sql.SQL(
            "LEFT JOIN pgdr.embedding_cache c ON c.model = {m} AND c.dimension = {d} "
            "AND c.sha256 = s.sha"
        ).format(m=sql.Literal(model), d=sql.Literal(src.dimension))
        if use_cache
        else sql.SQL("LEFT JOIN (SELECT NULL::real[] AS embedding) c ON false")
    )
    # One index probe per staged row, whatever the planner guesses about the unanalysed stage:
    # a hash join would scan the whole table once per batch.
    conn.execute("SET LOCAL enable_hashjoin = off")
    conn.execute("SET LOCAL enable_mergejoin = off")
    written = conn.execute(
        sql.SQL(
            "UPDATE {table} SET {vec} = coalesce(s.v, c.embedding::{vtype}) "
            "FROM {stage} s {cache} "
            "WHERE {key} = s.k::{key_type} AND (s.v IS NOT NULL OR c.embedding IS NOT NULL) "
            "RETURNING {key}::text"
        ).format(
            table=src.table,
            vec=sql.Identifier(src.spec.vector),
            vtype=sql.SQL(src.vector_type),
            stage=stage,
            cache=from_cache,
            key=src.key,
            key_type=sql.SQL(src.key_type),
        )
    ).fetchall()
    if use_cache:
        conn.execute(
            sql.SQL(
                "INSERT INTO pgdr.embedding_cache (model, dimension, sha256, embedding) "
                "SELECT DISTINCT ON (sha) {m}, {d}, sha, v::real[] FROM {stage} "
                "WHERE v IS NOT NULL AND sha IS NOT NULL ON CONFLICT DO NOTHING"
            ).format(m=sql.Literal(model), d=sql.Literal(src.dimension), stage=stage)
        )
    return {str(r[0]) for r in written}
