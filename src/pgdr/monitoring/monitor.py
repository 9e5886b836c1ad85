"""The monitor: runs every check on a schedule, records history, keeps incidents current.

One round runs the database checks, then the ``extra`` checks (the protection itself: backups,
WAL, restore tests, drills, key files — plain callables, so the agent runs the same ones), updates
the incident store (with its flapping policy) and then calls ``after_round`` (the notifier), whose
outcomes are kept in the snapshot. History is one JSON line per round in
``$PGDR_HOME/records/checks/<date>.jsonl``. A round that fails to notify still records its checks.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg_pool import ConnectionPool

from pgdr.config.pool_settings import PoolSettings
from pgdr.core.log import logger
from pgdr.incident.store import FlapPolicy, IncidentLog
from pgdr.monitoring.checks import ExtraCheck, MonitorConfig, run_checks
from pgdr.monitoring.metrics import MetricsSnapshot, collect_query_stats
from pgdr.pool import connect

log = logger(__name__)
AfterRound = Callable[[], list[dict[str, Any]]]


@dataclass
class Monitor:
    conninfo: str
    records: Path
    settings: PoolSettings = field(default_factory=PoolSettings)
    config: MonitorConfig = field(default_factory=MonitorConfig)
    pool: ConnectionPool | None = None
    extra: list[ExtraCheck] = field(default_factory=list)
    policy: FlapPolicy = field(default_factory=FlapPolicy)
    after_round: AfterRound | None = None
    database: str = "default"
    failed_checks_total: int = 0
    rounds_total: int = 0
    notifications_failed_total: int = 0
    last: MetricsSnapshot | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def incidents(self) -> IncidentLog:
        return IncidentLog(self.records / "incidents", self.policy)

    def run_once(self) -> MetricsSnapshot:
        """One round: checks, metrics, incidents, notifications, history."""
        results, report = run_checks(
            self.conninfo, self.settings, self.config, self.pool, self.extra
        )
        queries = None
        if report is not None:
            with connect(self.conninfo, self.settings) as conn:
                queries = collect_query_stats(conn)
        self.incidents.update(results)
        outcomes = self.after_round() if self.after_round else []
        with self._lock:
            self.rounds_total += 1
            self.failed_checks_total += sum(1 for r in results if not r.ok and not r.skipped)
            self.notifications_failed_total += sum(1 for o in outcomes if not o["delivered"])
            up = results[0]
            health_latency = next((r.value for r in results if r.name == "latency"), None)
            pool_stats = self.pool.get_stats() if self.pool else None
            self.last = MetricsSnapshot(
                collected_at=time.time(),
                healthy=up.ok,
                latency_ms=health_latency,
                pool={k: int(v) for k, v in pool_stats.items()} if pool_stats else None,
                report=report,
                queries=queries,
                checks=results,
                open_incidents=len(self.incidents.open_incidents()),
                failed_checks_total=self.failed_checks_total,
                database=self.database,
                incidents=[i.as_dict() for i in self.incidents.open_incidents()],
                notifications=outcomes,
                counters={
                    "rounds": self.rounds_total,
                    "notifications_failed": self.notifications_failed_total,
                },
            )
            self._append_history(self.last)
            return self.last

    def _append_history(self, snapshot: MetricsSnapshot) -> None:
        directory = self.records / "checks"
        directory.mkdir(parents=True, exist_ok=True)
        day = time.strftime("%Y-%m-%d", time.gmtime(snapshot.collected_at))
        line = {
            "at": snapshot.collected_at,
            "database": snapshot.database,
            "latency_ms": snapshot.latency_ms,
            "checks": [c.as_dict() for c in snapshot.checks],
        }
        # 0600: the long-running-queries check keeps (truncated) query text
        fd = os.open(directory / f"{day}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(json.dumps(line, default=str) + "\n")

    def history(self, limit: int = 200) -> list[dict[str, Any]]:
        """The newest ``limit`` rounds (for the dashboard's latency history), oldest first."""
        directory = self.records / "checks"
        lines: list[str] = []
        for path in sorted(directory.glob("*.jsonl"))[-2:] if directory.is_dir() else []:
            lines += path.read_text().splitlines()
        out = []
        for line in lines[-limit:]:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def run_forever(
        self,
        stop: threading.Event,
        rounds: int | None = None,
        on_round: Callable[[MetricsSnapshot], None] | None = None,
    ) -> None:
        """Rounds every ``interval_seconds`` until ``stop`` (or ``rounds`` are done)."""
        done = 0
        log.info("Monitoring every %g s.", self.config.interval_seconds)
        while not stop.is_set() and (rounds is None or done < rounds):
            try:
                snapshot = self.run_once()
            except Exception as exc:
                log.error("A monitor round failed (%s); the next one runs as scheduled.", exc)
                done += 1
                stop.wait(self.config.interval_seconds)
                continue
            failed = [c.name for c in snapshot.checks if not c.ok and not c.skipped]
            if failed:
                log.warning("Checks failed: %s.", ", ".join(failed))
            else:
                log.info("All checks passed.")
            if on_round is not None:
                on_round(snapshot)
            done += 1
            stop.wait(self.config.interval_seconds)
