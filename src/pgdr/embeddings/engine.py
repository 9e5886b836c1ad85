"""The re-embedding engine: plan jobs, run workers over them, finish, verify.

``Reembedder.prepare()`` checks everything that can be checked before any work (the provider's
key, the vector dimension against the column, the profile against the catalog) and creates or
joins one job per source. ``run()`` starts ``workers`` threads; each claims a batch, reads its
texts (cache hits need no text), asks the provider for the rest, and commits the vectors, the
group counters and the group status with the batch's ``done`` mark. The worker that commits a
job's last batch rebuilds the vector indexes the job dropped and closes the job. Finally the
runbook's verification query runs over every source of the profile.

Guarantee: each row of a job is written by exactly one committed batch. After a crash, only the
batches that were in flight (at most ``workers`` batches) are sent to the provider again; rows
of committed batches never are.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.embeddings.cache import cached_dimension_known
from pgdr.embeddings.jobs import (
    Job,
    Selection,
    ensure_schema,
    find_or_create_job,
    rebuild_indexes,
    worker_tag,
)
from pgdr.embeddings.providers import Provider, Vector
from pgdr.embeddings.source import ResolvedSource, resolve_source
from pgdr.embeddings.writer import BatchRow, fetch_batch, prefer_index_probes, write_batch
from pgdr.pool import connect
from pgdr.profile import Profile
from pgdr.profile.required import not_required_causes

PROBE_TEXT = "pgdr dimension probe"
REEMBED_FAILURE = "re-embedding failed"  # how a failure reason set by pgdr starts


@dataclass
class ReembedOptions:
    sources: list[str]
    group: str | None = None
    missing_only: bool = False
    workers: int = 2
    batch_rows: int = 1000
    use_cache: bool = True
    drop_indexes: str = "auto"
    maintenance_work_mem: str = "1GB"
    worker_name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


@dataclass
class SourceReport:
    source: str
    job_id: int
    resumed: bool
    total_rows: int
    pending_at_start: int
    written: int = 0
    failed: int = 0
    gone: int = 0
    cache_hits: int = 0
    api_inputs: int = 0
    batches: int = 0
    indexes_rebuilt: int = 0
    finished: bool = False
    job_failures: int = 0


@dataclass
class Timings:
    """Seconds spent waiting for the database and for the provider, summed over workers."""

    db_seconds: float = 0.0
    api_seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, db: float = 0.0, api: float = 0.0) -> None:
        with self.lock:
            self.db_seconds += db
            self.api_seconds += api

    def step(self, name: str, since: float) -> float:
        """Count the database step that started at ``since``; returns now."""
        now = time.perf_counter()
        with self.lock:
            self.steps[name] = self.steps.get(name, 0.0) + now - since
        return now


@dataclass
class ReembedReport:
    sources: list[SourceReport]
    verification: list[dict[str, Any]]
    provider: dict[str, int]
    model: str
    wall_seconds: float
    db_seconds: float
    api_seconds: float
    workers: int
    db_steps: dict[str, float] = field(default_factory=dict)

    @property
    def missing(self) -> int:
        return sum(int(v["missing"]) for v in self.verification)

    @property
    def failures(self) -> int:
        return sum(s.job_failures for s in self.sources)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.failures == 0 and all(s.finished for s in self.sources)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "model": self.model,
            "sources": [asdict(s) for s in self.sources],
            "verification": self.verification,
            "provider": self.provider,
            "wall_seconds": round(self.wall_seconds, 3),
            "db_seconds": round(self.db_seconds, 3),
            "api_seconds": round(self.api_seconds, 3),
            "workers": self.workers,
            "db_steps": {k: round(v, 3) for k, v in self.db_steps.items()},
        }


def verify(
    conn: psycopg.Connection[Any], sources: list[ResolvedSource], group: str | None = None
) -> list[dict[str, Any]]:
    """The verification query, per source: total, with embedding, missing, not required.

    One definition (profile/required.py): "missing" counts NULL vectors of rows the profile
    requires; NULL vectors of other rows are ``not_required``, explained ``by_cause`` ("35 vectors
    of 3 chatbots in status failed were not regenerated"). The runbook's raw count of NULL
    vectors is their sum. With ``group`` (``--chatbot``) only that group's rows are counted.
    """
    out = []
    for src in sources:
        scope = (
            sql.SQL("{}::text = {}").format(src.group, sql.Literal(group))
            if group is not None and src.spec.group_by
            else sql.SQL("true")
        )
        row = conn.execute(
            sql.SQL(
                "SELECT count(*), count({vec}), "
                "count(*) FILTER (WHERE {vec} IS NULL AND coalesce({req}, false)), "
                "count(*) FILTER (WHERE {vec} IS NULL AND NOT coalesce({req}, false)) "
                "FROM {table} WHERE {scope}"
            ).format(vec=src.vector, req=src.required, table=src.table, scope=scope)
        ).fetchone()
        assert row is not None
        not_required = int(row[3])
        out.append(
            {
                "table_name": src.spec.table,
                "total": int(row[0]),
                "with_embedding": int(row[1]),
                "missing": int(row[2]),
                "not_required": not_required,
                "by_cause": (
                    not_required_causes(conn, src.spec, src.schema, scope) if not_required else []
                ),
            }
        )
    return out


def _preflight(conn: psycopg.Connection[Any], options: ReembedOptions) -> None:
    """Everything that would stop the run half-way, checked before anything is written or any
    index dropped: read-only mode, and every server setting the run will use."""
    row = conn.execute("SELECT current_setting('transaction_read_only')").fetchone()
    if row and row[0] == "on":
        raise RuntimeFailure(
            "The database is in read-only mode (pgdr readonly status), and re-embedding writes "
            "vectors: turn it off first (pgdr readonly off), then run pgdr reembed again."
        )
    try:
        with conn.transaction():
            conn.execute(
                "SELECT set_config('maintenance_work_mem', %s, true)",
                (options.maintenance_work_mem,),
            )
    except psycopg.DataError as exc:
        raise ConfigError(
            f"--maintenance-work-mem {options.maintenance_work_mem!r} is not a valid "
            f"maintenance_work_mem ({str(exc).splitlines()[0]}); nothing was changed."
        ) from exc


def _elapsed(start: float) -> float:
    return time.perf_counter() - start


class Reembedder:
    """One ``pgdr reembed`` run over one or more sources of a profile."""

    def __init__(
        self, conninfo: str, profile: Profile, provider: Provider, options: ReembedOptions
    ) -> None:
        self.conninfo = conninfo
        self.profile = profile
        self.provider = provider
        self.options = options
        self.timings = Timings()
        self.plan: list[tuple[ResolvedSource, Job, SourceReport]] = []
        self._stop = threading.Event()
        self._error: BaseException | None = None

    # -- before any work ----------------------------------------------------------------------
    def prepare(self) -> list[SourceReport]:
        """Check dimensions and create (or join) one job per source; nothing written before."""
        if self.options.workers < 1 or self.options.batch_rows < 1:
            raise ConfigError("--workers and --batch-rows must be at least 1.")
        with connect(self.conninfo, autocommit=True) as conn:
            _preflight(conn, self.options)
            ensure_schema(conn)
            resolved = [
                resolve_source(conn, self.profile.embedding_source(name), self.profile.schema_name)
                for name in self.options.sources
            ]
            for src in resolved:
                self._check_dimension(conn, src)
            for src in resolved:
                job = find_or_create_job(
                    conn,
                    src,
                    Selection(self.options.group, self.options.missing_only),
                    self.provider.model,
                    self.options.batch_rows,
                    self.options.drop_indexes,
                )
                pending = conn.execute(
                    "SELECT coalesce(sum(cardinality(keys)), 0) FROM pgdr.reembed_batches "
                    "WHERE job_id = %s AND state = 'pending'",
                    (job.id,),
                ).fetchone()
                report = SourceReport(
                    src.name,
                    job.id,
                    not job.created,
                    job.total_rows,
                    int(pending[0]) if pending else 0,
                )
                self.plan.append((src, job, report))
        return [r for _s, _j, r in self.plan]

    def _check_dimension(self, conn: psycopg.Connection[Any], src: ResolvedSource) -> None:
        if self.options.use_cache and cached_dimension_known(
            conn, self.provider.model, src.dimension
        ):
            return  # the cache already proves this model gives this dimension: no API call
        self.provider.dimension = src.dimension
        result = self.provider.embed([PROBE_TEXT])
        vec = result.vectors[0]
        if vec is None:
            raise RuntimeFailure(
                f"The embedding provider could not embed a probe text: {result.errors[0]}."
            )
        self._check_vector(src, vec)

    def _check_vector(self, src: ResolvedSource, vec: Vector) -> None:
        if len(vec) != src.dimension:
            raise ConfigError(
                f"Model {self.provider.model!r} returns {len(vec)}-dimensional vectors but "
                f"{src.label} is {src.vector_type}; nothing was written. Choose a model of "
                f"{src.dimension} dimensions (PGDR_EMBEDDING_MODEL) or change the column."
            )

    @property
    def pending_rows(self) -> int:
        return sum(r.pending_at_start for _s, _j, r in self.plan)

    # -- the work -----------------------------------------------------------------------------
    def run(self, progress: Callable[[int], None] | None = None) -> ReembedReport:
        started = time.perf_counter()
        advance = progress or (lambda _n: None)
        for src, job, report in self.plan:
            self.provider.dimension = src.dimension
            self._run_source(src, job, report, advance)
        with connect(self.conninfo, autocommit=True) as conn:
            all_sources = [
                resolve_source(conn, spec, self.profile.schema_name)
                for spec in self.profile.embeddings
                if spec.name in self.options.sources
            ]
            verification = verify(conn, all_sources, self.options.group)
        return ReembedReport(
            sources=[r for _s, _j, r in self.plan],
            verification=verification,
            provider=self.provider.stats.as_dict(),
            model=self.provider.model,
            wall_seconds=_elapsed(started),
            db_seconds=self.timings.db_seconds,
            api_seconds=self.timings.api_seconds,
            workers=self.options.workers,
            db_steps=dict(self.timings.steps),
        )

    def _run_source(
        self,
        src: ResolvedSource,
        job: Job,
        report: SourceReport,
        advance: Callable[[int], None],
    ) -> None:
        while True:
            threads = [
                threading.Thread(target=self._worker, args=(src, job, report, advance), daemon=True)
                for _ in range(self.options.workers)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if self._error is not None:
                raise self._error
            if not self._wait_for_others(job):
                break  # else a batch was left by a worker that died: run the workers again
        self._finish(src, job, report)

    def _wait_for_others(self, job: Job) -> bool:
        """Wait for batches other workers hold; True if some are still pending after that."""
        with connect(self.conninfo) as conn, conn.transaction():
            t0 = time.perf_counter()
            # Blocks until their transactions end; batches they committed no longer match.
            left = conn.execute(
                "SELECT batch_no FROM pgdr.reembed_batches WHERE job_id = %s "
                "AND state = 'pending' FOR UPDATE",
                (job.id,),
            ).fetchall()
            self.timings.add(db=_elapsed(t0))
        return bool(left)

    def _worker(
        self,
        src: ResolvedSource,
        job: Job,
        report: SourceReport,
        advance: Callable[[int], None],
    ) -> None:
        try:
            with (
                connect(self.conninfo) as conn,
                connect(self.conninfo, autocommit=True) as status_conn,
            ):
                # the heartbeat `reembed status` reads: a live worker's session carries the job
                conn.execute(
                    "SELECT set_config('application_name', %s, false)", (worker_tag(job.id),)
                )
                conn.commit()
                while not self._stop.is_set():
                    n = self._one_batch(conn, status_conn, src, job, report)
                    if n is None:
                        return
                    advance(n)
        except BaseException as exc:  # first error stops every worker; its batch rolled back
            if self._error is None:
                self._error = exc
            self._stop.set()

    def _one_batch(
        self,
        conn: psycopg.Connection[Any],
        status_conn: psycopg.Connection[Any],
        src: ResolvedSource,
        job: Job,
        report: SourceReport,
    ) -> int | None:
        """Claim, embed and commit one batch; its row count, or None when none is left."""
        model, use_cache = self.provider.model, self.options.use_cache
        with conn.transaction():
            t0 = time.perf_counter()
            # The batch's vectors and its done mark commit together, so a commit lost in a server
            # crash only means the batch is embedded again: no need to wait for the WAL flush.
            conn.execute("SET LOCAL synchronous_commit = off")
            prefer_index_probes(conn)
            claimed = conn.execute(
                "SELECT batch_no, keys, groups FROM pgdr.reembed_batches "
                "WHERE job_id = %s AND state = 'pending' ORDER BY batch_no "
                "LIMIT 1 FOR UPDATE SKIP LOCKED",
                (job.id,),
            ).fetchone()
            if claimed is None:
                self.timings.add(db=_elapsed(t0))
                return None
            batch_no, keys, groups = int(claimed[0]), list(claimed[1]), list(claimed[2])
            group_of = dict(zip(keys, groups, strict=True))
            t = self.timings.step("claim", t0)
            self._mark_working(status_conn, src, sorted(set(groups)))
            t = self.timings.step("status", t)
            rows = fetch_batch(conn, src, keys, model, use_cache)
            self.timings.step("fetch", t)
            self.timings.add(db=_elapsed(t0))

            staged, failures, texts = self._embed_rows(src, rows)

            t2 = time.perf_counter()
            written = write_batch(conn, src, staged, model, use_cache)
            t = self.timings.step("write", t2)
            # Rows deleted since the batch was cut (e.g. their chatbot was deleted) are "gone".
            gone = len(keys) - len(written) - len(failures)
            if failures:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO pgdr.reembed_failures (job_id, row_key, group_key, reason) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT (job_id, row_key) "
                        "DO UPDATE SET reason = EXCLUDED.reason",
                        [(job.id, k, group_of[k], reason) for k, reason in failures.items()],
                    )
            self._count_groups(conn, src, job, keys, group_of, failures)
            t = self.timings.step("groups", t)
            hits = sum(1 for r in rows if r.hit)
            conn.execute(
                "UPDATE pgdr.reembed_batches SET state = 'done', written = %s, failed = %s, "
                "gone = %s, cache_hits = %s, api_inputs = %s, worker = %s, "
                "finished_at = clock_timestamp() WHERE job_id = %s AND batch_no = %s",
                (
                    len(written),
                    len(failures),
                    gone,
                    hits,
                    len(texts),
                    self.options.worker_name,
                    job.id,
                    batch_no,
                ),
            )
        self.timings.step("commit", t)
        self.timings.add(db=_elapsed(t2))
        with self.timings.lock:
            report.written += len(written)
            report.failed += len(failures)
            report.gone += gone
            report.cache_hits += hits
            report.api_inputs += len(texts)
            report.batches += 1
        return len(keys)

    def _embed_rows(
        self, src: ResolvedSource, rows: list[BatchRow]
    ) -> tuple[list[tuple[str, bytes | None, Vector | None]], dict[str, str], list[str]]:
        """Stage cache hits, ask the provider for each distinct missing text once."""
        failures: dict[str, str] = {}
        todo: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            if row.hit:
                continue
            if row.text is None:
                failures[row.key] = "the text is NULL"
            else:
                todo.setdefault(row.text, []).append(i)
        staged: list[tuple[str, bytes | None, Vector | None]] = [
            (r.key, r.sha, None) for r in rows if r.hit
        ]
        texts = list(todo)
        if texts:
            t1 = time.perf_counter()
            result = self.provider.embed(texts)
            self.timings.add(api=_elapsed(t1))
            for text, vec, error in zip(texts, result.vectors, result.errors, strict=True):
                if vec is not None:
                    self._check_vector(src, vec)
                for i in todo[text]:
                    if vec is None:
                        failures[rows[i].key] = error or "no vector returned"
                    else:
                        staged.append((rows[i].key, rows[i].sha, vec))
        return staged, failures, texts

    def _mark_working(
        self, status_conn: psycopg.Connection[Any], src: ResolvedSource, groups: list[str]
    ) -> None:
        """Runbook step: the chatbot's status goes ``ready -> embedding`` as its work starts.

        A chatbot named with ``--chatbot`` may be retried from ``failed`` only when pgdr's own
        re-embedding failed it (its reason says so): a chatbot failed for another reason (the
        crawl, HTTP 503) gets its vectors but keeps its status, so it never turns ``ready``.
        """
        st = src.spec.status
        if st is None or not src.spec.group_by or src.status_key_type is None:
            return
        retry: sql.Composable = sql.SQL("false")
        if self.options.group is not None and st.reason_column:
            retry = sql.SQL("({col} = {failed} AND starts_with({reason}, {ours}))").format(
                col=sql.Identifier(st.column),
                failed=sql.Literal(st.failed),
                reason=sql.Identifier(st.reason_column),
                ours=sql.Literal(REEMBED_FAILURE),
            )
        status_conn.execute(
            sql.SQL(
                "UPDATE {table} SET {col} = %s WHERE {key} = ANY(%s::text[]::{kt}[]) "
                "AND ({col} = %s OR {retry})"
            ).format(
                table=sql.Identifier(src.schema, st.table),
                col=sql.Identifier(st.column),
                key=sql.Identifier(st.key),
                kt=sql.SQL(src.status_key_type),
                retry=retry,
            ),
            (st.working, groups, st.ready),
        )

    def _count_groups(
        self,
        conn: psycopg.Connection[Any],
        src: ResolvedSource,
        job: Job,
        keys: list[str],
        group_of: dict[str, str],
        failures: dict[str, str],
    ) -> None:
        """Count the batch's rows off their groups; a finished group's status moves on."""
        done = Counter(group_of[k] for k in keys)
        failed = Counter(group_of[k] for k in failures)
        first_reason: dict[str, str] = {}
        for key, reason in failures.items():
            first_reason.setdefault(group_of[key], reason)
        names = sorted(done)
        conn.execute(  # lock in a fixed order: workers sharing a group never deadlock
            "SELECT 1 FROM pgdr.reembed_groups WHERE job_id = %s AND group_key = ANY(%s) "
            "ORDER BY group_key FOR UPDATE",
            (job.id, names),
        )
        # One pass over the touched groups; those this batch finished come back with
        # remaining <= 0 and get their status moved below.
        updated = conn.execute(
            "UPDATE pgdr.reembed_groups g SET remaining = g.remaining - d.n, "
            "failed = g.failed + d.f, reason = coalesce(g.reason, d.r) "
            "FROM unnest(%s::text[], %s::int[], %s::int[], %s::text[]) AS d(k, n, f, r) "
            "WHERE g.job_id = %s AND g.group_key = d.k "
            "RETURNING g.group_key, g.failed, g.total, g.reason, g.remaining",
            (
                names,
                [done[g] for g in names],
                [failed[g] for g in names],
                [first_reason.get(g) for g in names],
                job.id,
            ),
        ).fetchall()
        finished = [row[:4] for row in updated if row[4] <= 0]
        st = src.spec.status
        if st is None or src.status_key_type is None:
            return
        table = sql.Identifier(src.schema, st.table)
        col = sql.Identifier(st.column)
        kt = sql.SQL(src.status_key_type)
        ready = [g for g, n_failed, _t, _r in finished if g and not n_failed]
        if ready:  # one statement for every group finished cleanly in this batch
            reset = (
                sql.SQL(", {} = NULL").format(sql.Identifier(st.reason_column))
                if st.reason_column  # a retried chatbot's old failure reason no longer holds
                else sql.SQL("")
            )
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET {} = %s{} WHERE {} = ANY(%s::text[]::{}[]) AND {} = %s"
                ).format(table, col, reset, sql.Identifier(st.key), kt, col),
                (st.ready, ready, st.working),
            )
        for group_key, n_failed, total, reason in finished:
            if not group_key or not n_failed:
                continue
            sets: list[sql.Composable] = [sql.SQL("{} = %s").format(col)]
            params: list[Any] = [st.failed]
            if st.reason_column:
                sets.append(sql.SQL("{} = %s").format(sql.Identifier(st.reason_column)))
                params.append(f"{REEMBED_FAILURE} for {n_failed} of {total} rows: {reason}")
            conn.execute(
                sql.SQL("UPDATE {} SET {} WHERE {} = %s::{} AND {} = %s").format(
                    table, sql.SQL(", ").join(sets), sql.Identifier(st.key), kt, col
                ),
                [*params, group_key, st.working],
            )

    def _finish(self, src: ResolvedSource, job: Job, report: SourceReport) -> None:
        """Close the job once no batch is left: rebuild dropped indexes, mark it done."""
        with connect(self.conninfo) as conn, conn.transaction():
            t0 = time.perf_counter()
            got = conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", (0x70676472, job.id))
            row = got.fetchone()
            state = conn.execute(
                "SELECT state, dropped_indexes, (SELECT count(*) FROM pgdr.reembed_batches "
                "WHERE job_id = j.id AND state = 'pending'), "
                "(SELECT count(*) FROM pgdr.reembed_failures WHERE job_id = j.id) "
                "FROM pgdr.reembed_jobs j WHERE id = %s FOR UPDATE",
                (job.id,),
            ).fetchone()
            assert state is not None
            report.job_failures = int(state[3])
            if state[0] == "done":
                report.finished = True
            elif row and row[0] and int(state[2]) == 0:
                rebuild_indexes(conn, list(state[1]), self.options.maintenance_work_mem)
                report.indexes_rebuilt = len(state[1])
                conn.execute(
                    "UPDATE pgdr.reembed_jobs SET state = 'done', finished_at = clock_timestamp() "
                    "WHERE id = %s",
                    (job.id,),
                )
                report.finished = True
            self.timings.add(db=_elapsed(t0))
