"""Re-embedding job state, kept in the ``pgdr`` schema of the target database.

A job is the list of rows one ``pgdr reembed`` run must embed, cut into batches when it is
created (``pgdr.reembed_batches``). Workers, in one process or on many machines, claim a batch
with ``SELECT ... FOR UPDATE SKIP LOCKED`` and hold that row lock while they embed it; the
vectors, the batch's ``done`` mark, the per-group counters and the group status all commit in
one transaction. A worker that dies releases its lock with its connection, and the batch is
simply claimed again: no batch is ever written twice, none is lost.

Tables: ``reembed_jobs`` (one row per job, with the vector indexes dropped for it),
``reembed_batches``, ``reembed_groups`` (rows left per chatbot, to move its status back) and
``reembed_failures`` (one reason per row that could not be embedded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from pgdr.embeddings.source import ResolvedSource

LOCK_SCHEMA = 0x70676472  # "pgdr": serialises schema creation and job creation

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS pgdr;
CREATE TABLE IF NOT EXISTS pgdr.reembed_jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source           text NOT NULL,
    group_filter     text,
    missing_only     boolean NOT NULL,
    model            text NOT NULL,
    dimension        integer NOT NULL,
    batch_rows       integer NOT NULL,
    state            text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done')),
    total_rows       bigint NOT NULL DEFAULT 0,
    dropped_indexes  text[] NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at      timestamptz
);
CREATE TABLE IF NOT EXISTS pgdr.reembed_batches (
    job_id       bigint NOT NULL REFERENCES pgdr.reembed_jobs (id) ON DELETE CASCADE,
    batch_no     integer NOT NULL,
    keys         text[] NOT NULL,
    groups       text[] NOT NULL,
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
    written      integer,
    failed       integer,
    gone         integer,
    cache_hits   integer,
    api_inputs   integer,
    worker       text,
    finished_at  timestamptz,
    PRIMARY KEY (job_id, batch_no)
);
CREATE INDEX IF NOT EXISTS reembed_batches_pending
    ON pgdr.reembed_batches (job_id, batch_no) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS pgdr.reembed_groups (
    job_id     bigint NOT NULL REFERENCES pgdr.reembed_jobs (id) ON DELETE CASCADE,
    group_key  text NOT NULL,
    total      integer NOT NULL,
    remaining  integer NOT NULL,
    failed     integer NOT NULL DEFAULT 0,
    reason     text,
    PRIMARY KEY (job_id, group_key)
);
CREATE TABLE IF NOT EXISTS pgdr.reembed_failures (
    job_id     bigint NOT NULL REFERENCES pgdr.reembed_jobs (id) ON DELETE CASCADE,
    row_key    text NOT NULL,
    group_key  text,
    reason     text NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job_id, row_key)
);
CREATE TABLE IF NOT EXISTS pgdr.embedding_cache (
    model       text NOT NULL,
    dimension   integer NOT NULL,
    sha256      bytea NOT NULL,
    embedding   real[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (model, dimension, sha256)
) WITH (toast_tuple_target = 8160);
DO $$ BEGIN  -- caches created before the option: set it once (new rows only)
    IF NOT EXISTS (SELECT FROM pg_class WHERE oid = 'pgdr.embedding_cache'::regclass
                   AND 'toast_tuple_target=8160' = ANY (coalesce(reloptions, '{}'))) THEN
        ALTER TABLE pgdr.embedding_cache SET (toast_tuple_target = 8160);
    END IF;
END $$;
"""


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the ``pgdr`` schema and its tables if needed (safe with concurrent workers)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_SCHEMA,))
        conn.execute(SCHEMA_SQL.encode())


@dataclass
class Job:
    id: int
    source: str
    total_rows: int
    created: bool
    dropped_indexes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Selection:
    """Which rows a job covers."""

    group: str | None = None
    missing_only: bool = False

    def where(self, src: ResolvedSource) -> sql.Composable:
        parts: list[sql.Composable] = [src.filter]
        if self.missing_only:
            parts.append(sql.SQL("{} IS NULL").format(src.vector))
        if self.group is not None:
            parts.append(sql.SQL("{}::text = {}").format(src.group, sql.Literal(self.group)))
        status = src.spec.status
        if status and src.spec.group_by:
            # As the runbook: ready groups only. A named group may also be retried after
            # failing or after an interrupted runbook script left it in the working state.
            allowed = [status.ready]
            if self.group is not None:
                allowed += [status.working, status.failed]
            parts.append(
                sql.SQL("{} IN (SELECT {} FROM {} WHERE {} = ANY({}))").format(
                    src.group,
                    sql.Identifier(status.key),
                    sql.Identifier(src.schema, status.table),
                    sql.Identifier(status.column),
                    sql.Literal(allowed),
                )
            )
        return sql.SQL(" AND ").join(parts)


def find_or_create_job(
    conn: psycopg.Connection[Any],
    src: ResolvedSource,
    selection: Selection,
    model: str,
    batch_rows: int,
    drop_indexes: str,
) -> Job:
    """Join the unfinished job for the same work, or cut a new one into batches.

    ``drop_indexes`` is ``auto`` (drop the column's vector indexes when the job rewrites at least
    half of the table, rebuild them at the end), ``always`` or ``never``.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_SCHEMA,))
        row = conn.execute(
            "SELECT id, total_rows, dropped_indexes FROM pgdr.reembed_jobs WHERE state = 'running' "
            "AND source = %s AND group_filter IS NOT DISTINCT FROM %s AND missing_only = %s "
            "AND model = %s AND dimension = %s ORDER BY id LIMIT 1",
            (src.name, selection.group, selection.missing_only, model, src.dimension),
        ).fetchone()
        if row is not None:
            return Job(int(row[0]), src.name, int(row[1]), False, list(row[2]))
        job_row = conn.execute(
            "INSERT INTO pgdr.reembed_jobs (source, group_filter, missing_only, model, dimension, "
            "batch_rows) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (src.name, selection.group, selection.missing_only, model, src.dimension, batch_rows),
        ).fetchone()
        assert job_row is not None
        job_id = int(job_row[0])
        where = selection.where(src)
        rows_query = sql.SQL(
            "SELECT {key}::text AS k, {group}::text AS g, "
            "row_number() OVER (ORDER BY {group}, {key}) AS rn FROM {table} WHERE {where}"
        ).format(key=src.key, group=src.group, table=src.table, where=where)
        conn.execute(
            sql.SQL(
                "INSERT INTO pgdr.reembed_batches (job_id, batch_no, keys, groups) "
                "SELECT {job}, (rn - 1) / {size}, array_agg(k ORDER BY rn), "
                "array_agg(coalesce(g, '') ORDER BY rn) FROM ({rows}) s GROUP BY (rn - 1) / {size}"
            ).format(job=job_id, size=batch_rows, rows=rows_query)
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO pgdr.reembed_groups (job_id, group_key, total, remaining) "
                "SELECT {job}, coalesce(g, ''), count(*), count(*) FROM ({rows}) s GROUP BY 2"
            ).format(job=job_id, rows=rows_query)
        )
        total_row = conn.execute(
            "SELECT coalesce(sum(cardinality(keys)), 0) FROM pgdr.reembed_batches "
            "WHERE job_id = %s",
            (job_id,),
        ).fetchone()
        total = int(total_row[0]) if total_row else 0
        dropped = _maybe_drop_indexes(conn, src, total, drop_indexes)
        conn.execute(
            "UPDATE pgdr.reembed_jobs SET total_rows = %s, dropped_indexes = %s WHERE id = %s",
            (total, dropped, job_id),
        )
        return Job(job_id, src.name, total, True, dropped)


def vector_indexes(conn: psycopg.Connection[Any], src: ResolvedSource) -> list[tuple[str, str]]:
    """(qualified name, definition) of the HNSW/IVFFlat indexes on the source's vector column."""
    rows = conn.execute(
        "SELECT format('%%I.%%I', n.nspname, ic.relname), pg_get_indexdef(i.indexrelid) "
        "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
        "JOIN pg_class tc ON tc.oid = i.indrelid JOIN pg_namespace n ON n.oid = tc.relnamespace "
        "JOIN pg_am am ON am.oid = ic.relam "
        "JOIN pg_attribute a ON a.attrelid = tc.oid AND a.attnum = ANY(i.indkey) "
        "WHERE n.nspname = %s AND tc.relname = %s AND a.attname = %s "
        "AND am.amname IN ('hnsw', 'ivfflat') ORDER BY 1",
        (src.schema, src.spec.table, src.spec.vector),
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def _maybe_drop_indexes(
    conn: psycopg.Connection[Any], src: ResolvedSource, total: int, policy: str
) -> list[str]:
    if policy == "never" or total == 0:
        return []
    indexes = vector_indexes(conn, src)
    if not indexes:
        return []
    if policy == "auto":
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(src.table)).fetchone()
        if count is None or total * 2 < int(count[0]):
            return []
    for name, _definition in indexes:
        conn.execute(sql.SQL("DROP INDEX " + name))
    return [definition for _name, definition in indexes]


def rebuild_indexes(
    conn: psycopg.Connection[Any], definitions: list[str], maintenance_work_mem: str
) -> None:
    """Recreate dropped vector indexes in one pass each, with memory for the graph."""
    conn.execute(
        sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(maintenance_work_mem))
    )
    conn.execute("SET LOCAL max_parallel_maintenance_workers = 2")
    for definition in definitions:
        statement = definition.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1)
        conn.execute(sql.SQL(statement))


@dataclass
class JobStatus:
    id: int
    source: str
    state: str
    model: str
    missing_only: bool
    group_filter: str | None
    total_rows: int
    done_rows: int
    written: int
    failed: int
    gone: int
    cache_hits: int
    api_inputs: int
    batches: int
    batches_done: int
    rows_per_second: float | None
    eta_seconds: float | None
    indexes_to_rebuild: int
    created_at: datetime
    finished_at: datetime | None
    failures: list[dict[str, str]]

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def worker_tag(job_id: int) -> str:
    """The application_name of a worker's session: its heartbeat, as the server sees it."""
    return f"pgdr reembed job {job_id}"


_STATUS_SQL = """
SELECT j.id, j.source, j.state, j.model, j.missing_only, j.group_filter, j.total_rows,
       coalesce(sum(cardinality(b.keys)) FILTER (WHERE b.state = 'done'), 0),
       coalesce(sum(b.written), 0), coalesce(sum(b.failed), 0), coalesce(sum(b.gone), 0),
       coalesce(sum(b.cache_hits), 0), coalesce(sum(b.api_inputs), 0),
       count(b.batch_no), count(b.batch_no) FILTER (WHERE b.state = 'done'),
       extract(epoch FROM max(b.finished_at) - j.created_at),
       cardinality(j.dropped_indexes) * (j.state = 'running')::int,
       j.created_at, j.finished_at,
       (SELECT count(*) FROM pg_stat_activity a
        WHERE a.application_name = 'pgdr reembed job ' || j.id)
FROM pgdr.reembed_jobs j LEFT JOIN pgdr.reembed_batches b ON b.job_id = j.id
GROUP BY j.id ORDER BY j.id DESC LIMIT %s
"""


def job_statuses(conn: psycopg.Connection[Any], limit: int = 10) -> list[JobStatus]:
    """The most recent jobs with progress, rate, ETA and their first failures.

    A ``running`` job with no live worker session (``worker_tag``: a worker that died, was
    killed or lost its connection) is shown as ``dead``, without an ETA; running ``pgdr reembed``
    again resumes it.
    """
    exists = conn.execute("SELECT to_regclass('pgdr.reembed_jobs')").fetchone()
    if exists is None or exists[0] is None:
        return []
    rows = conn.execute(_STATUS_SQL, (limit,)).fetchall()
    return [_job_status(r, _first_failures(conn, int(r[0]))) for r in rows]


def _first_failures(conn: psycopg.Connection[Any], job_id: int) -> list[dict[str, str]]:
    failures = conn.execute(
        "SELECT row_key, group_key, reason FROM pgdr.reembed_failures WHERE job_id = %s "
        "ORDER BY at, row_key LIMIT 20",
        (job_id,),
    ).fetchall()
    return [{"key": f[0], "group": f[1], "reason": f[2]} for f in failures]


def _job_status(r: Any, failures: list[dict[str, str]]) -> JobStatus:
    """One row of ``_STATUS_SQL`` as a status: live or dead, rate and ETA."""
    total, done, elapsed = int(r[6]), int(r[7]), r[15]
    state = "dead" if r[2] == "running" and not r[19] else str(r[2])
    rate = done / float(elapsed) if elapsed and done else None
    eta = (total - done) / rate if rate and state == "running" else None
    return JobStatus(
        id=int(r[0]),
        source=str(r[1]),
        state=state,
        model=str(r[3]),
        missing_only=bool(r[4]),
        group_filter=r[5],
        total_rows=total,
        done_rows=done,
        written=int(r[8]),
        failed=int(r[9]),
        gone=int(r[10]),
        cache_hits=int(r[11]),
        api_inputs=int(r[12]),
        batches=int(r[13]),
        batches_done=int(r[14]),
        rows_per_second=round(rate, 1) if rate else None,
        eta_seconds=round(eta, 1) if eta is not None else None,
        indexes_to_rebuild=int(r[16] or 0),
        created_at=r[17],
        finished_at=r[18],
        failures=failures,
    )
