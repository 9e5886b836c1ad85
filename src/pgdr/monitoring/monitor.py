"""The monitor: runs every check on a schedule, records history, keeps incidents current.

History is one JSON line per round in ``$PGDR_HOME/records/checks/<date>.jsonl``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from psycopg_pool import ConnectionPool

from pgdr.config.pool_settings import PoolSettings
from pgdr.core.log import logger
from pgdr.monitoring.checks import MonitorConfig, run_checks
from pgdr.monitoring.incidents import IncidentLog
from pgdr.monitoring.metrics import MetricsSnapshot, collect_query_stats
from pgdr.pool import connect

log = logger(__name__)


@dataclass
class Monitor:
    conninfo: str
    records: Path
    settings: PoolSettings = field(default_factory=PoolSettings)
    config: MonitorConfig = field(default_factory=MonitorConfig)
    pool: ConnectionPool | None = None
    failed_checks_total: int = 0
    last: MetricsSnapshot | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def incidents(self) -> IncidentLog:
        return IncidentLog(self.records / "incidents")

    def run_once(self) -> MetricsSnapshot:
        """One round: checks, metrics, incidents, history."""
        results, report = run_checks(self.conninfo, self.settings, self.config, self.pool)
        queries = None
        if report is not None:
            with connect(self.conninfo, self.settings) as conn:
                queries = collect_query_stats(conn)
        self.incidents.update(results)
        with self._lock:
            self.failed_checks_total += sum(1 for r in results if not r.ok and not r.skipped)
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
            )
            self._append_history(self.last)
            return self.last

    def _append_history(self, snapshot: MetricsSnapshot) -> None:
        directory = self.records / "checks"
        directory.mkdir(parents=True, exist_ok=True)
        day = time.strftime("%Y-%m-%d", time.gmtime(snapshot.collected_at))
        line = {"at": snapshot.collected_at, "checks": [c.as_dict() for c in snapshot.checks]}
        with (directory / f"{day}.jsonl").open("a") as handle:
            handle.write(json.dumps(line, default=str) + "\n")

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
            snapshot = self.run_once()
            failed = [c.name for c in snapshot.checks if not c.ok and not c.skipped]
            if failed:
                log.warning("Checks failed: %s.", ", ".join(failed))
            else:
                log.info("All checks passed.")
            if on_round is not None:
                on_round(snapshot)
            done += 1
            stop.wait(self.config.interval_seconds)
