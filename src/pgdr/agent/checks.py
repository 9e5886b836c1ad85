"""The agent's checks: per database, the monitor of ``pgdr monitor run`` and ``pgdr serve``.

Every uptime interval (``[databases.NAME.schedule] uptime``; the runbook's 2 minutes by
default) the checker of a database runs one round of the watch layer's monitor
(:func:`pgdr.watch.build_monitor`, built by :func:`database_monitor`, which ``pgdr monitor``
uses too): the runbook's checks (uptime first, latency, connections, long queries, bloat), the
protection checks (backup age and failures, the WAL streamer, lag, gaps, the slot, restore
tests, the drill schedule, integrity, key files, TLS), the incidents of that database's store
(with ``[monitor]``'s flapping policy) and the notifiers of ``pgdr.toml``. The agent adds its
own finding: a job that failed ``JOB_FAILURES_P1`` times in a row is the P1 incident
``agent_job:<job>`` naming the job and its last error, resolved by its next success.

The drill is not about one database (it runs the runbook's scenarios in sandboxes), so its
``drill_overdue`` check counts only for a database whose drill job is scheduled; for the others
it is reported as skipped (not checked here), so N databases do not hold N copies of one
fleet-wide incident and a database without a drill job is not degraded by it.

A *check* (``AgentHooks.checks``) is any extra ``(DatabaseHandle) -> list[CheckResult]``; a
*sink* is any ``(DatabaseHandle, list[CheckResult]) -> None`` called with each round's results.
The default sink writes the last round to ``<records>/agent/checks.json``. A check that raises
becomes a failed, skipped result naming it, never a pass.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pgdr.agent.database import DatabaseHandle
from pgdr.agent.state import JobState
from pgdr.cluster.manager import default_cluster
from pgdr.cluster.target import resolve_target
from pgdr.config.fleet import Schedule
from pgdr.config.pool_settings import PoolSettings
from pgdr.core.errors import RuntimeFailure
from pgdr.core.log import logger
from pgdr.core.severity import Severity
from pgdr.monitoring.checks import CheckResult, ExtraCheck, skipped
from pgdr.watch import MonitorSetup, Watched, backup_period, build_monitor

log = logger("pgdr.agent")
Check = Callable[[DatabaseHandle], list[CheckResult]]
Sink = Callable[[DatabaseHandle, list[CheckResult]], None]
LAST_ROUND = "checks.json"
JOB_FAILURES_P1 = 3
JOB_CHECK = "agent_job"
DRILL_CHECK = "drill_overdue"


def monitored_conninfo(handle: DatabaseHandle) -> str:
    """The database's connection string; the embedded default even while it is stopped, so
    that the monitor records the outage instead of failing to start."""
    url = handle.db.url()
    if url:
        return resolve_target(handle.settings, url=url).conninfo
    try:
        return resolve_target(handle.settings).conninfo
    except RuntimeFailure:
        cluster = default_cluster(handle.settings)
        if not cluster.exists:
            raise
        return cluster.conninfo()


def database_monitor(
    handle: DatabaseHandle,
    interval: float,
    pool_settings: PoolSettings | None = None,
    with_pool: bool = False,
) -> MonitorSetup:
    """The watch layer's monitor of one database of the fleet (its records, its namespaced
    repository when it is declared, its name as the metrics label)."""
    opener = handle.repository if handle.db.declared else None
    watched = Watched(handle.name, handle.records, opener, backup_period(handle.db))
    return build_monitor(
        handle.settings,
        monitored_conninfo(handle),
        pool_settings or PoolSettings(),
        interval,
        with_pool=with_pool,
        watched=watched,
    )


def job_check(name: str, jobs: Callable[[], Mapping[str, JobState]]) -> ExtraCheck:
    """``agent_job:<name>``: P1 once the job failed ``JOB_FAILURES_P1`` times in a row."""
    check = f"{JOB_CHECK}:{name}"

    def run() -> CheckResult:
        state = jobs().get(name)
        failures = state.failures if state else 0
        if state is not None and failures >= JOB_FAILURES_P1:
            message = (
                f"The agent's {name} job failed {failures} times in a row; last error: "
                f"{state.last_message}"
            )
            return CheckResult(check, False, Severity.P1, message, failures)
        return CheckResult(check, True, None, f"{name}: {failures} failure(s) in a row", failures)

    return run


def without_drill(check: ExtraCheck) -> ExtraCheck:
    """``check``, except that a drill_overdue result becomes "skipped" (no drill job here)."""

    def run() -> CheckResult:
        result = check()
        if result.name != DRILL_CHECK:
            return result
        return skipped(DRILL_CHECK, "no drill job is scheduled for this database")

    return run


def record_last_round(handle: DatabaseHandle, results: list[CheckResult]) -> None:
    directory = handle.records / "agent"
    directory.mkdir(parents=True, exist_ok=True)
    body = {"at": time.time(), "checks": [r.as_dict() for r in results]}
    tmp = directory / f".{LAST_ROUND}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(body, default=str, indent=1))
    tmp.replace(directory / LAST_ROUND)


@dataclass
class AgentHooks:
    """Extra checks and sinks of every round (extend, do not replace)."""

    checks: list[Check] = field(default_factory=list)
    sinks: list[Sink] = field(default_factory=lambda: [record_last_round])


def _extra(handle: DatabaseHandle, check: Check) -> ExtraCheck:
    name = getattr(check, "__name__", "check")

    def run() -> CheckResult:
        try:
            results = check(handle)
        except Exception as exc:  # a broken check is a finding, never a silent pass
            return CheckResult(name, False, None, f"the check could not run: {exc}", skipped=True)
        failed = [r for r in results if not r.ok]
        return (
            failed[0]
            if failed
            else (results[0] if results else CheckResult(name, True, None, "ok"))
        )

    return run


class DatabaseChecks:
    """One database's monitor rounds every uptime interval (the monitor is built at the first
    round; a failure to build it, e.g. a bad ``[notify]`` table, is said and retried)."""

    def __init__(
        self,
        handle: DatabaseHandle,
        hooks: AgentHooks,
        schedule: Schedule,
        jobs: Callable[[], Mapping[str, JobState]],
    ) -> None:
        self.handle = handle
        self.hooks = hooks
        self.schedule = schedule
        self.jobs = jobs
        self.setup: MonitorSetup | None = None

    def _monitor(self, job_names: list[str]) -> MonitorSetup:
        if self.setup is None:
            setup = database_monitor(self.handle, self.schedule.period_s())
            if "drill" not in job_names:
                setup.monitor.extra = [without_drill(c) for c in setup.monitor.extra]
            setup.monitor.extra += [job_check(n, self.jobs) for n in job_names]
            setup.monitor.extra += [_extra(self.handle, c) for c in self.hooks.checks]
            self.setup = setup
        return self.setup

    def round(self, job_names: list[str]) -> list[CheckResult]:
        """One monitor round (checks, incidents, notifications, history), then the sinks."""
        results = self._monitor(job_names).monitor.run_once().checks
        for sink in self.hooks.sinks:
            sink(self.handle, results)
        return results

    def run_forever(self, stop: threading.Event, job_names: list[str]) -> None:
        name = self.handle.name
        while not stop.is_set():
            began = time.time()
            try:
                results = self.round(job_names)
                failed = [r.name for r in results if not r.ok and not r.skipped]
                if failed:
                    log.warning("%s: checks failed: %s", name, ", ".join(failed))
            except Exception as exc:  # a config error included: said each round, then retried
                log.exception("%s: the check round failed: %s", name, exc)
            stop.wait(max(0.0, self.schedule.next_after(began) - time.time()))
