"""Reading a batch's texts and writing its vectors back in bulk.

A batch's texts come out in one query that also computes each text's SHA-256 and looks it up in
the content-hash cache. Its vectors go back with one binary ``COPY`` into a temporary staging
table and one ``UPDATE ... FROM`` that takes each row's vector from the stage (fresh from the
provider) or from the cache; never one ``UPDATE`` per row.

Cache hits are looked up by one primary-key probe per staged row, whatever the statistics say:
the lookup is a ``LATERAL`` subquery with ``LIMIT 1``, which the planner cannot flatten into a
join it may reorder. (As a plain join, a cache grown by the previous run but not yet analysed
was estimated at one row per model and driven from, rescanning the stage once per cache entry:
16 s per 1,000-row batch against a 20,000-entry cache, the warm run's slowness.)
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


def prefer_index_probes(conn: psycopg.Connection[Any]) -> None:
    """For the rest of the transaction, join by index probes (one per batch row).

    A batch is a thousand rows out of millions, and the planner's view of the staging table
    (never analysed) and of a cache that grows during the job is stale: it would scan the whole
    table or cache once per batch (or, worse, once per row when it believes the cache empty).
    Every join here is on a primary key, so index probes are always right.
    """
    conn.execute("SET LOCAL enable_hashjoin = off")
    conn.execute("SET LOCAL enable_mergejoin = off")
    conn.execute("SET LOCAL enable_seqscan = off")


def fetch_batch(
    conn: psycopg.Connection[Any],
    src: ResolvedSource,
    keys: Sequence[str],
    model: str,
    use_cache: bool,
) -> list[BatchRow]:
    """The batch's rows that still exist: text (unless cached), its SHA-256, cache hit or not.

    One query: each row's hash is computed once (the subquery is a fence) and looked up in
    the cache by one primary-key probe, a ``LATERAL`` subquery with ``LIMIT 1`` as in
    :func:`write_batch` (an ``EXISTS`` became a hashed subplan reading every entry of the
    model, twice: 0.7 s a batch against 100,000 entries). A hit's text is
    not sent back: it is not needed, and with a warm cache it was most of the bytes.
    Parameters go binary: psycopg dumps a list of 1,000 hashes as text at 46 ms a batch.
    """
    probe = sql.SQL(
        "SELECT true AS hit FROM pgdr.embedding_cache WHERE model = %(model)s "
        "AND dimension = %(dimension)s AND sha256 = r.sha LIMIT 1"
        if use_cache
        else "SELECT WHERE false"
    )
    query = sql.SQL(
        "SELECT r.k, CASE WHEN h.hit THEN NULL ELSE r.t END, r.sha, h.hit IS NOT NULL FROM ("
        "SELECT {key}::text AS k, {text} AS t, sha256(convert_to({text}, 'UTF8')) AS sha "
        "FROM {table} WHERE {key} = ANY(%(keys)b::text[]::{key_type}[]) OFFSET 0) r "
        "LEFT JOIN LATERAL ({probe}) h ON true"
    ).format(
        key=src.key, text=src.text, table=src.table, key_type=sql.SQL(src.key_type), probe=probe
    )
    return [
        BatchRow(str(key), text, None if sha is None else bytes(sha), bool(found))
        for key, text, sha, found in conn.execute(
            query, {"keys": list(keys), "model": model, "dimension": src.dimension}
        ).fetchall()
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
    stage = _copy_to_stage(conn, src, staged)
    names = {
        "table": src.table,
        "vec": sql.Identifier(src.spec.vector),
        "vtype": sql.SQL(src.vector_type),
        "stage": stage,
        "key": src.key,
        "key_type": sql.SQL(src.key_type),
        "m": sql.Literal(model),
        "d": sql.Literal(src.dimension),
    }
    written = conn.execute(
        sql.SQL(
            "UPDATE {table} SET {vec} = s.v FROM {stage} s "
            "WHERE {key} = s.k::{key_type} AND s.v IS NOT NULL RETURNING {key}::text"
        ).format(**names)
    ).fetchall()
    if use_cache and any(vec is None for _k, _s, vec in staged):
        written += conn.execute(
            sql.SQL(
                "UPDATE {table} SET {vec} = c.embedding::{vtype} FROM {stage} s "
                "CROSS JOIN LATERAL (SELECT embedding FROM pgdr.embedding_cache "
                "WHERE model = {m} AND dimension = {d} AND sha256 = s.sha LIMIT 1) c "
                "WHERE {key} = s.k::{key_type} AND s.v IS NULL RETURNING {key}::text"
            ).format(**names)
        ).fetchall()
    if use_cache:
        # In hash order: two workers adding the same texts wait for each other in one order,
        # never in a cycle (a deadlock). Only the hashes and row addresses are sorted, each
        # vector is fetched by its address (sorting the vectors along spilled 6 MB to disk a
        # batch). A text twice in the batch is added once, by the ON CONFLICT.
        conn.execute(
            sql.SQL(
                "INSERT INTO pgdr.embedding_cache (model, dimension, sha256, embedding) "
                "SELECT {m}, {d}, o.sha, (SELECT v FROM {stage} s WHERE s.ctid = o.ctid)::real[] "
                "FROM (SELECT sha, ctid FROM {stage} WHERE v IS NOT NULL AND sha IS NOT NULL "
                "ORDER BY sha) o ON CONFLICT DO NOTHING"
            ).format(**names)
        )
    return {str(r[0]) for r in written}


def settle_cache_entries(
    status_conn: psycopg.Connection[Any],
    model: str,
    dimension: int,
    staged: Sequence[tuple[str, bytes | None, Vector | None]],
) -> None:
    """Read the cache entries a batch committed a moment ago (``status_conn`` in autocommit),
    so that their hint bits are set while their pages are still unwritten since the last
    checkpoint: the rows of ``staged`` whose vectors came fresh from the provider.

    With data checksums on, the first hint bit set on a page after a checkpoint logs the whole
    page. A cache entry fills a page, so the first reader of a cache written by an earlier run
    (the next re-embedding, with every text cached) logged 8 KB per entry: 0.77 GB of its
    2.4 GB of WAL for 100,000 vectors. Set now, the bits cost no WAL. (PostgreSQL sets no hint
    bit for an asynchronous commit until the WAL is on disk, hence a batch commits
    synchronously.)
    """
    shas = [sha for _key, sha, vec in staged if sha is not None and vec is not None]
    if shas:
        status_conn.execute(
            "SELECT count(*) FROM pgdr.embedding_cache WHERE model = %s AND dimension = %s "
            "AND sha256 = ANY(%b::bytea[])",
            (model, dimension, shas),
        )


def _copy_to_stage(
    conn: psycopg.Connection[Any],
    src: ResolvedSource,
    staged: Sequence[tuple[str, bytes | None, Vector | None]],
) -> sql.Identifier:
    """One binary COPY of the rows into the source's staging table (emptied at commit)."""
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
    return stage
