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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.core.log import logger
from pgdr.embeddings.batches import (
    BatchOutcome,
    Claim,
    claim_next,
    mark_done,
    pending_rows,
    record_failures,
    wait_for_held,
)
from pgdr.embeddings.cache import cached_dimension_known
from pgdr.embeddings.groups import count_groups, mark_working
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
from pgdr.embeddings.writer import (
    BatchRow,
    fetch_batch,
    prefer_index_probes,
    settle_cache_entries,
    write_batch,
)
from pgdr.pool import connect
from pgdr.profile import Profile
from pgdr.profile.required import not_required_causes

log = logger(__name__)

PROBE_TEXT = "pgdr dimension probe"


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

    def add(self, batch: BatchOutcome) -> None:
        self.written += batch.written
        self.failed += batch.failed
        self.gone += batch.gone
        self.cache_hits += batch.cache_hits
        self.api_inputs += batch.api_inputs
        self.batches += 1


@dataclass
class Embedded:
    """A batch's rows ready to write (key, text hash, fresh vector or None for a cache hit), the
    rows that failed (key -> reason) and how many distinct texts went to the provider."""

    staged: list[tuple[str, bytes | None, Vector | None]]
    failures: dict[str, str] = field(default_factory=dict)
    api_inputs: int = 0


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
                report = SourceReport(
                    src.name, job.id, not job.created, job.total_rows, pending_rows(conn, job.id)
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
            left = wait_for_held(conn, job.id)
            self.timings.add(db=_elapsed(t0))
        return left

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
        with conn.transaction():
            t0 = time.perf_counter()
            # The commit waits for its WAL to be on this server's disk (a commit lost in a crash
            # would only mean the batch is embedded again, but the cache entries it adds can be
            # settled right after it only then: see settle_cache_entries), not for standbys
            conn.execute("SET LOCAL synchronous_commit = local")
            prefer_index_probes(conn)
            claim = claim_next(conn, job.id)
            if claim is None:
                self.timings.add(db=_elapsed(t0))
                return None
            rows = self._read_batch(conn, status_conn, src, claim, t0)
            embedded = self._embed_rows(src, rows)
            t2 = time.perf_counter()
            outcome = self._write_batch(conn, src, job, claim, rows, embedded)
            t = time.perf_counter()
            mark_done(conn, job.id, claim.batch_no, outcome, self.options.worker_name)
        t = self.timings.step("commit", t)
        if self.options.use_cache:
            self._settle(status_conn, src, embedded, claim.batch_no)
            self.timings.step("settle", t)
        self.timings.add(db=_elapsed(t2))
        with self.timings.lock:
            report.add(outcome)
        return len(claim.keys)

    def _settle(
        self,
        status_conn: psycopg.Connection[Any],
        src: ResolvedSource,
        embedded: Embedded,
        batch_no: int,
    ) -> None:
        """Set the hint bits of the batch's new cache entries (see settle_cache_entries): only a
        saving of WAL later, so a failure is logged, never the job's end (the batch committed)."""
        try:
            settle_cache_entries(status_conn, self.provider.model, src.dimension, embedded.staged)
        except psycopg.Error as exc:
            log.warning("The cache entries of batch %d were not settled: %s", batch_no, exc)

    def _read_batch(
        self,
        conn: psycopg.Connection[Any],
        status_conn: psycopg.Connection[Any],
        src: ResolvedSource,
        claim: Claim,
        claimed_since: float,
    ) -> list[BatchRow]:
        """Mark the batch's groups working, then read its texts (or cache hits)."""
        t = self.timings.step("claim", claimed_since)
        mark_working(status_conn, src, sorted(set(claim.groups)), self.options.group is not None)
        t = self.timings.step("status", t)
        rows = fetch_batch(conn, src, claim.keys, self.provider.model, self.options.use_cache)
        self.timings.step("fetch", t)
        self.timings.add(db=_elapsed(claimed_since))
        return rows

    def _write_batch(
        self,
        conn: psycopg.Connection[Any],
        src: ResolvedSource,
        job: Job,
        claim: Claim,
        rows: list[BatchRow],
        embedded: Embedded,
    ) -> BatchOutcome:
        """Write the vectors, keep the failures, count the rows off their groups."""
        t = time.perf_counter()
        written = write_batch(
            conn, src, embedded.staged, self.provider.model, self.options.use_cache
        )
        t = self.timings.step("write", t)
        record_failures(conn, job.id, claim, embedded.failures)
        count_groups(conn, src, job.id, claim.group_of, embedded.failures)
        self.timings.step("groups", t)
        return BatchOutcome(
            written=len(written),
            failed=len(embedded.failures),
            gone=len(claim.keys) - len(written) - len(embedded.failures),
            cache_hits=sum(1 for r in rows if r.hit),
            api_inputs=embedded.api_inputs,
        )

    def _embed_rows(self, src: ResolvedSource, rows: list[BatchRow]) -> Embedded:
        """Stage cache hits, ask the provider for each distinct missing text once."""
        out = Embedded([(r.key, r.sha, None) for r in rows if r.hit])
        todo: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            if row.hit:
                continue
            if row.text is None:
                out.failures[row.key] = "the text is NULL"
            else:
                todo.setdefault(row.text, []).append(i)
        texts = list(todo)
        out.api_inputs = len(texts)
        if texts:
            t1 = time.perf_counter()
            result = self.provider.embed(texts)
            self.timings.add(api=_elapsed(t1))
            for text, vec, error in zip(texts, result.vectors, result.errors, strict=True):
                if vec is not None:
                    self._check_vector(src, vec)
                for i in todo[text]:
                    if vec is None:
                        out.failures[rows[i].key] = error or "no vector returned"
                    else:
                        out.staged.append((rows[i].key, rows[i].sha, vec))
        return out

    def _finish(self, src: ResolvedSource, job: Job, report: SourceReport) -> None:
        """Close the job once no batch is left: rebuild dropped indexes, mark it done.

        One worker at a time: the others wait for it and then see the job done. (With a
        ``try`` lock, a worker that lost the race read the job before the winner committed and
        reported it unfinished, exit 1, although nothing was left.)"""
        with connect(self.conninfo) as conn, conn.transaction():
            t0 = time.perf_counter()
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (0x70676472, job.id))
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
            elif int(state[2]) == 0:
                rebuild_indexes(conn, list(state[1]), self.options.maintenance_work_mem)
                report.indexes_rebuilt = len(state[1])
                conn.execute(
                    "UPDATE pgdr.reembed_jobs SET state = 'done', finished_at = clock_timestamp() "
                    "WHERE id = %s",
                    (job.id,),
                )
                report.finished = True
            self.timings.add(db=_elapsed(t0))
