"""``pgdr agent``: one supervised process that keeps every configured database protected.

Per database, three threads:

* the **job worker** runs the scheduled jobs (base backups with retention and copies, restore
  tests, the quarterly drill) one at a time, so jobs of one database never overlap; what is due
  and how each run ended lives in :mod:`pgdr.agent.state`, so a restart (even after ``kill -9``)
  neither repeats nor skips a due job. A database with no backup gets one at once;
* the **streamer** runs :class:`pgdr.wal.stream.Streamer` (pg_receivewal through the slot, with
  its own restart backoff) and is itself restarted with backoff if it stops on an error;
* the **checker** runs the watch layer's monitor round (:mod:`pgdr.agent.checks`: the
  runbook's and the protection checks, incidents, notifications) every uptime interval, also
  while a long backup runs.

Before any of that the worker identifies the database (system identifier, version). An
unreachable database is reported (log line, ``problem`` in the state) and retried; a database
whose system identifier another configured database already has is refused: both would claim
the same WAL history. A job that fails or crashes is recorded and retried with backoff; a
crashed job never takes the agent down. ``stop`` (SIGTERM) ends every loop: the streamer
uploads what it holds, a running job is left to finish within the grace period, and one cut off
is recorded as interrupted and retried at the next start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgdr.agent import jobs
from pgdr.agent.checks import AgentHooks, DatabaseChecks
from pgdr.agent.database import DatabaseHandle
from pgdr.agent.state import JobState, StateStore, read_history
from pgdr.agent.streaming import StreamSupervisor
from pgdr.backup.repository import RESTORE_TESTS
from pgdr.config.fleet import AgentConfig, Schedule
from pgdr.core.errors import PgdrError
from pgdr.core.log import logger
from pgdr.drills.report import drill_history, next_scheduled
from pgdr.wal.server import DEFAULT_SLOT, ServerInfo, ensure_slot, server_info

log = logger("pgdr.agent")

JOB_ORDER = ("backup_full", "backup_incremental", "restore_test", "drill")
HEARTBEAT_S = 5.0
TICK_S = 0.5
STREAM_WAIT_S = 60.0


@dataclass
class AgentOptions:
    hooks: AgentHooks = field(default_factory=AgentHooks)
    retry_base_s: float = 30.0  # first retry of a failed job; doubles up to retry_max_s
    retry_max_s: float = 900.0
    connect_retry_max_s: float = 30.0
    stop_grace_s: float = 30.0
    drill_scenarios: list[str] | None = None  # None: every scenario of the runbook

    @classmethod
    def from_config(cls, config: AgentConfig, hooks: AgentHooks | None = None) -> AgentOptions:
        return cls(
            hooks=hooks or AgentHooks(),
            retry_base_s=config.retry_base_s,
            retry_max_s=config.retry_max_s,
            connect_retry_max_s=config.connect_retry_max_s,
            stop_grace_s=config.stop_grace_s,
            drill_scenarios=config.drill_scenarios,
        )


class Identities:
    """System identifiers claimed by this agent's databases (a clone is refused)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[int, str] = {}

    def claim(self, name: str, sysid: int) -> str | None:
        """None when ``name`` may have ``sysid``; else the database that already has it."""
        with self._lock:
            owner = self._owners.setdefault(sysid, name)
            return None if owner == name else owner


@dataclass
class Job:
    name: str
    schedule: Schedule | None
    run: Callable[[], dict[str, Any]]
    quarterly: bool = False


class DatabaseWorker:
    """Everything the agent does for one database."""

    def __init__(
        self, handle: DatabaseHandle, options: AgentOptions, identities: Identities
    ) -> None:
        self.handle = handle
        self.options = options
        self.identities = identities
        self.store = StateStore(handle.records)
        self.info: ServerInfo | None = None
        self.refused = False
        self._identified = threading.Event()
        self.jobs = self._jobs()
        self.threads: list[threading.Thread] = []
        self.supervisor = StreamSupervisor(handle, options.connect_retry_max_s)

    def _jobs(self) -> dict[str, Job]:
        s = self.handle.db.schedules
        h = self.handle
        table = [
            Job("backup_full", s["full"], lambda: jobs.backup_job(h)),
            Job("backup_incremental", s["incremental"], lambda: jobs.backup_job(h, True)),
            Job("restore_test", s["restore_test"], lambda: jobs.restore_test_job(h)),
            Job(
                "drill",
                s["drill"],
                lambda: jobs.drill_job(h, self.options.drill_scenarios),
                h.db.quarterly_drill,
            ),
        ]
        return {j.name: j for j in table if j.schedule is not None or j.quarterly}

    # ----- start-up -------------------------------------------------------------------------
    def prepare(self) -> None:
        """Settle what a previous run left: interrupted jobs, throwaway clusters, due times."""
        now = time.time()
        for root in jobs.leftover_scratch(self.handle):
            log.warning("%s: removing a throwaway cluster left behind: %s", self.name, root)
            jobs.remove_scratch(self.handle, root)
        history = read_history(self.handle.records)
        for name, state in self.store.state.jobs.items():
            if state.running_since is not None:
                self._settle_interrupted(name, state, history)
        for name, job in self.jobs.items():
            state = self.store.job(name)
            if state.next_due is None:
                state.next_due = self._first_due(job, now)
        self.store.state.agent_pid = os.getpid()
        self.store.save()

    def _settle_interrupted(
        self, name: str, state: JobState, history: list[dict[str, Any]]
    ) -> None:
        """A run the state shows as running: finished if the history says so, else rerun.

        The history line of a finished run is written before the state; a kill between the
        two must not run the job twice.
        """
        due = state.running_due
        last = next((e for e in reversed(history) if e.get("job") == name), None)
        job = self.jobs.get(name)
        state.running_since = state.running_due = None
        if last is not None and last["event"] == "finished" and last.get("due") == due:
            state.runs += 1
            state.last_ok, state.last_finished = True, float(last["at"])
            state.last_message, state.failures, state.retry_at = last.get("message"), 0, None
            if job is not None and due is not None:
                state.next_due = self._next_due(job, due, float(last["at"]))
            return
        self.store.record(name, "interrupted", due=due)
        log.warning("%s: %s was interrupted by a stop or crash; it runs again.", self.name, name)

    def _first_due(self, job: Job, now: float) -> float:
        if job.quarterly:
            due = next_scheduled(drill_history(self.handle.settings.home))["next_due"]
            return now if due is None else _parse_time(str(due))
        assert job.schedule is not None
        if job.name in ("backup_full", "restore_test") and not self._has_any(job.name):
            return now  # unprotected (or unproven) until the first one
        return job.schedule.next_after(now)

    def _has_any(self, job: str) -> bool:
        """Whether the repository already holds a backup (or a restore-test record)."""
        try:
            repo = self.handle.repository()
            if job == "backup_full":
                return bool(repo.list_backups())
            return any(True for _ in repo.store.list(RESTORE_TESTS))
        except PgdrError:
            return False  # unreachable: try at once, the run will say why

    @property
    def name(self) -> str:
        return self.handle.name

    # ----- identification ---------------------------------------------------------------------
    def _problem(self, sentence: str | None, reachable: bool | None = None) -> None:
        state = self.store.state
        if sentence != state.problem:
            if sentence:
                log.warning("%s: %s", self.name, sentence)
            else:
                log.info("%s: the database is reachable again.", self.name)
        state.problem = sentence
        if reachable is not None:
            state.reachable = reachable
        self.store.save()

    def identify(self, stop: threading.Event) -> bool:
        """Connect until the database answers; False when stopped or refused."""
        backoff = 1.0
        while not stop.is_set():
            try:
                info = server_info(self.handle.target().conninfo)
            except PgdrError as exc:
                self._problem(f"The database is unreachable, retrying: {exc.message}", False)
                stop.wait(backoff)
                backoff = min(backoff * 2, self.options.connect_retry_max_s)
                continue
            owner = self.identities.claim(self.name, info.system_identifier)
            if owner is not None:
                self.refused = True
                self._problem(
                    f"Refused: database system {info.system_identifier} is already configured "
                    f"as {owner!r}; two names for one cluster would claim the same WAL history.",
                    True,
                )
                return False
            self.info = info
            self.store.state.system_identifier = str(info.system_identifier)
            self._problem(None, True)
            self._identified.set()
            log.info(
                "%s: database system %s, PostgreSQL %s.",
                self.name,
                info.system_identifier,
                info.major,
            )
            return True
        return False

    # ----- jobs -------------------------------------------------------------------------------
    def due_job(self, now: float) -> tuple[Job, JobState] | None:
        ready = []
        for name in JOB_ORDER:
            job = self.jobs.get(name)
            if job is None:
                continue
            state = self.store.job(name)
            if state.next_due is None or state.next_due > now:
                continue
            if state.retry_at is not None and state.retry_at > now:
                continue
            ready.append((state.next_due, JOB_ORDER.index(name), job, state))
        if not ready:
            return None
        ready.sort(key=lambda item: (item[0], item[1]))
        return ready[0][2], ready[0][3]

    def run_job(self, job: Job, state: JobState) -> None:
        due = state.next_due if state.next_due is not None else time.time()
        started = time.time()
        counted_to = max(due, state.last_started or due)  # a retry counts from its last attempt
        self._record_skipped(job, state, counted_to, started, due, "the agent was down or busy")
        state.running_since, state.running_due, state.last_started = started, due, started
        self.store.save()
        self.store.record(job.name, "started", due=due)
        log.info("%s: %s started.", self.name, job.name)
        ok, summary, message = self._execute(job)
        finished = time.time()
        state.running_since = state.running_due = None
        state.last_finished, state.last_ok, state.last_message = finished, ok, message
        state.runs += 1
        if ok:
            state.failures, state.retry_at = 0, None
            self._record_skipped(
                job, state, started, finished, due, "it ran past its next due time"
            )
            state.next_due = self._next_due(job, due, finished)
        else:
            state.failures += 1
            delay = min(
                self.options.retry_base_s * 2 ** (state.failures - 1), self.options.retry_max_s
            )
            state.retry_at = finished + delay
        event = "finished" if ok else "failed"
        self.store.record(job.name, event, due=due, message=message, summary=summary)
        self.store.save()
        level = logging.INFO if ok else logging.WARNING
        log.log(level, "%s: %s %s: %s", self.name, job.name, event, message)

    def _execute(self, job: Job) -> tuple[bool, dict[str, Any] | None, str]:
        try:
            summary = job.run()
        except PgdrError as exc:
            return False, None, exc.message
        except Exception as exc:  # a crash is recorded and retried, never fatal to the agent
            log.exception("%s: %s crashed", self.name, job.name)
            return False, None, f"crashed: {type(exc).__name__}: {exc}"
        if summary.get("passed") is False:
            return False, summary, f"the restore test failed: {summary.get('detail')}"
        return True, summary, _describe(job.name, summary)

    def _next_due(self, job: Job, due: float, finished: float) -> float | None:
        if job.quarterly:
            return self._first_due(job, finished)
        assert job.schedule is not None
        return job.schedule.next_in_series(due, finished)

    def _record_skipped(
        self, job: Job, state: JobState, after: float, until: float, anchor: float, why: str
    ) -> None:
        if job.schedule is None:
            return
        count = job.schedule.occurrences_between(after, until, anchor)
        if count:
            state.skipped += count
            self.store.record(job.name, "skipped", count=count, reason=why)
            log.warning("%s: %s skipped %d occurrence(s): %s.", self.name, job.name, count, why)

    def _wait_for_streaming(self, stop: threading.Event) -> None:
        """Before the first job: the slot exists and pg_receivewal runs (or a bounded wait).

        A backup that began before the slot existed would start at WAL the streamer never
        receives: the recovery window would have a gap right after it.
        """
        try:
            ensure_slot(self.handle.target().conninfo, DEFAULT_SLOT)
        except PgdrError as exc:
            log.warning("%s: cannot create the replication slot: %s", self.name, exc.message)
        deadline = time.monotonic() + STREAM_WAIT_S
        while not stop.is_set() and time.monotonic() < deadline:
            if self.supervisor.streaming:
                return
            stop.wait(TICK_S)
        log.warning("%s: WAL streaming is not running yet; jobs start anyway.", self.name)

    def work(self, stop: threading.Event) -> None:
        """The job loop: identify, then run whatever is due, one job at a time."""
        if not self.identify(stop):
            return
        if self.handle.db.config.wal:
            self._wait_for_streaming(stop)
        beat = 0.0
        while not stop.is_set():
            now = time.time()
            picked = self.due_job(now)
            if picked is not None:
                self.run_job(*picked)
                continue
            if now - beat >= HEARTBEAT_S:
                self.store.save()
                beat = now
            stop.wait(TICK_S)

    # ----- streaming and checks ---------------------------------------------------------------
    def stream(self, stop: threading.Event) -> None:
        self.supervisor.run(stop, self._identified, lambda: self.info, lambda: self.refused)

    def check(self, stop: threading.Event) -> None:
        schedule = self.handle.db.schedules["uptime"]
        if schedule is not None:
            checks = DatabaseChecks(
                self.handle, self.options.hooks, schedule, lambda: self.store.state.jobs
            )
            checks.run_forever(stop, list(self.jobs))

    def start(self, stop: threading.Event) -> None:
        self.prepare()
        targets: list[tuple[str, Callable[[threading.Event], None]]] = [
            ("jobs", self.work),
            ("checks", self.check),
        ]
        if self.handle.db.config.wal:
            targets.append(("wal", self.stream))
        for role, target in targets:
            thread = threading.Thread(
                target=target, args=(stop,), name=f"pgdr-{self.name}-{role}", daemon=True
            )
            thread.start()
            self.threads.append(thread)


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _describe(job: str, summary: dict[str, Any]) -> str:
    if job.startswith("backup"):
        removed = sum(len(r["removed"]) for r in summary.get("retention", []))
        return (
            f"backup {summary['backup_id']} ({summary['kind']}), {removed} expired backup(s) "
            f"removed, copied to {len(summary.get('copies', []))} secondary tier(s)"
        )
    if job == "restore_test":
        return (
            f"restore test of {summary['backup_id']} passed; proven RTO "
            f"{summary['proven_rto_s']:.1f} s"
        )
    if job == "drill":
        return "drill passed: " + ", ".join(
            f"{name} (RTO {r['rto_s']:.1f} s)" for name, r in summary["scenarios"].items()
        )
    return "done"


class Agent:
    """The whole process: a worker per database, stopped together."""

    def __init__(self, handles: list[DatabaseHandle], options: AgentOptions | None = None) -> None:
        self.options = options or AgentOptions()
        identities = Identities()
        self.workers = [DatabaseWorker(h, self.options, identities) for h in handles]

    def start(self, stop: threading.Event) -> None:
        for worker in self.workers:
            worker.start(stop)
        log.info("pgdr agent started for %s.", ", ".join(w.name for w in self.workers))

    def join(self) -> None:
        """After ``stop`` is set: wait for the threads (a long job gets the grace period)."""
        deadline = time.monotonic() + self.options.stop_grace_s
        for worker in self.workers:
            for thread in worker.threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        busy = [t.name for w in self.workers for t in w.threads if t.is_alive()]
        if busy:
            log.warning(
                "Stopping with work cut off (%s); it runs again at the next start.", ", ".join(busy)
            )
        else:
            log.info("pgdr agent stopped cleanly.")

    def run(self, stop: threading.Event) -> None:
        self.start(stop)
        stop.wait()
        self.join()
