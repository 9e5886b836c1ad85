"""Metrics for dashboards and Prometheus: latency, pool, query performance, protection, incidents.

The same snapshot feeds ``GET /api/monitoring/metrics`` (JSON, the runbook's endpoint) and
``GET /metrics`` (Prometheus text format), so the two never disagree. The Prometheus names follow
its conventions (checked by ``promtool check metrics`` in the tests): everything under ``pgdr_``,
base units (``_seconds``, ``_bytes``, ratios 0-1), counters end in ``_total``, and every series
carries a ``database`` label. A value pgdr could not observe is left out, never reported as 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pgdr.core.severity import Severity
from pgdr.monitoring.checks import CheckResult
from pgdr.monitoring.reports import DatabaseReport

DATABASE_STATS = """
SELECT xact_commit, xact_rollback, deadlocks, temp_bytes,
       round(blks_hit * 100.0 / NULLIF(blks_hit + blks_read, 0), 2),
       tup_returned, tup_fetched, tup_inserted, tup_updated, tup_deleted
FROM pg_stat_database WHERE datname = current_database()
"""


@dataclass
class QueryStats:
    commits: int = 0
    rollbacks: int = 0
    deadlocks: int = 0
    temp_bytes: int = 0
    cache_hit_pct: float | None = None
    rows_returned: int = 0
    rows_fetched: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0

    @property
    def rollback_pct(self) -> float:
        total = self.commits + self.rollbacks
        return round(100.0 * self.rollbacks / total, 3) if total else 0.0


def collect_query_stats(conn: psycopg.Connection[Any]) -> QueryStats:
    row = conn.execute(DATABASE_STATS).fetchone()
    if row is None:
        return QueryStats()
    commits, rollbacks, deadlocks, temp, hit, returned, fetched, ins, upd, dele = row
    return QueryStats(
        int(commits),
        int(rollbacks),
        int(deadlocks),
        int(temp),
        float(hit) if hit is not None else None,
        int(returned),
        int(fetched),
        int(ins),
        int(upd),
        int(dele),
    )


@dataclass
class MetricsSnapshot:
    collected_at: float
    healthy: bool
    latency_ms: float | None
    pool: dict[str, int] | None
    report: DatabaseReport | None
    queries: QueryStats | None
    checks: list[CheckResult]
    open_incidents: int = 0
    failed_checks_total: int = 0
    database: str = "default"
    incidents: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def facts(self, check: str) -> dict[str, Any]:
        """The numbers a check carried (first detail), or {} when it did not run."""
        for result in self.checks:
            if result.name == check and result.details:
                return dict(result.details[0])
        return {}

    def as_dict(self) -> dict[str, Any]:
        queries = asdict(self.queries) if self.queries else None
        if queries is not None and self.queries is not None:
            queries["rollback_pct"] = self.queries.rollback_pct
        return {
            "collected_at": self.collected_at,
            "database": {
                "healthy": self.healthy,
                "latency_ms": self.latency_ms,
                "connections": self.report.connections if self.report else None,
                "max_connections": self.report.max_connections if self.report else None,
                "long_running_queries": len(self.report.long_queries) if self.report else None,
                "tables": [asdict(t) for t in self.report.tables] if self.report else [],
            },
            "pool": self.pool,
            "queries": queries,
            "errors": {
                "failed_checks": [c.name for c in self.checks if not c.ok and not c.skipped],
                "failed_checks_total": self.failed_checks_total,
                "rollback_pct": self.queries.rollback_pct if self.queries else None,
                "deadlocks": self.queries.deadlocks if self.queries else None,
            },
            "checks": [c.as_dict() for c in self.checks],
            "open_incidents": self.open_incidents,
            "database_name": self.database,
            "incidents": self.incidents,
            "notifications": self.notifications,
            "counters": self.counters,
            "state": protection_state(self),
        }


def protection_state(snapshot: MetricsSnapshot) -> str:
    """green: every check passed; amber: a P2/P3 failure or a check skipped; red: P0/P1."""
    failing = [c for c in snapshot.checks if not c.ok and not c.skipped]
    if not snapshot.healthy or any(c.severity and c.severity.rank <= 1 for c in failing):
        return "red"
    if failing or any(c.skipped for c in snapshot.checks):
        return "amber"
    return "green"


Family = GaugeMetricFamily | CounterMetricFamily


class SnapshotCollector(Collector):
    """Turns snapshots (one per watched database) into metric families, a fresh registry per
    scrape; each metric name is one family whose samples carry their database's label."""

    def __init__(self, *snapshots: MetricsSnapshot) -> None:
        self.snapshots = snapshots
        self.snap = snapshots[0]
        self.db = self.snap.database
        self.families: dict[str, Family] = {}

    def _family(self, name: str, doc: str, labels: list[str], counter: bool = False) -> Family:
        if name not in self.families:
            kind = CounterMetricFamily if counter else GaugeMetricFamily
            self.families[name] = kind(name, doc, labels=labels)
        return self.families[name]

    def gauge(
        self, name: str, doc: str, value: float | None, labels: dict[str, str] | None = None
    ) -> None:
        if value is None:
            return
        extra = labels or {}
        family = self._family(name, doc, ["database", *extra])
        family.add_metric([self.db, *extra.values()], float(value))

    def counter(self, name: str, doc: str, value: float | None) -> None:
        if value is None:
            return
        family = self._family(name, doc, ["database"], counter=True)
        family.add_metric([self.db], float(value))

    def labelled(self, name: str, doc: str, label: str, values: Mapping[str, float]) -> None:
        family = self._family(name, doc, ["database", label])
        for key, value in values.items():
            family.add_metric([self.db, key], float(value))

    def collect(self) -> Any:
        self.families = {}
        for snapshot in self.snapshots:
            self.snap, self.db = snapshot, snapshot.database
            self._database()
            self._queries()
            self._protection()
            self._incidents()
        return iter(self.families.values())

    def _database(self) -> None:
        s = self.snap
        self.gauge("pgdr_up", "1 when the database answers the health check", int(s.healthy))
        latency = s.latency_ms / 1000 if s.latency_ms is not None else None
        self.gauge("pgdr_latency_seconds", "Health check round trip", latency)
        if s.pool:
            in_use = s.pool.get("pool_size", 0) - s.pool.get("pool_available", 0)
            self.labelled(
                "pgdr_pool_connections",
                "pgdr pool connections by state",
                "state",
                {"in_use": in_use, "idle": s.pool.get("pool_available", 0)},
            )
            self.gauge(
                "pgdr_pool_requests_waiting",
                "Requests waiting for a connection",
                s.pool.get("requests_waiting", 0),
            )
        if s.report is not None:
            self.gauge("pgdr_connections", "Client connections", s.report.connections)
            self.gauge("pgdr_max_connections", "Server max_connections", s.report.max_connections)
            self.gauge(
                "pgdr_long_running_queries",
                "Queries over the long-query threshold",
                len(s.report.long_queries),
            )
            self.labelled(
                "pgdr_table_size_bytes",
                "Total relation size",
                "table",
                {t.table: t.bytes for t in s.report.tables},
            )
        checks = {c.name: int(c.ok) for c in s.checks if not c.skipped}
        self.labelled("pgdr_check_ok", "1 when the check passed", "check", checks)
        self.counter(
            "pgdr_check_failures_total", "Failed checks since start", s.failed_checks_total
        )
        self.counter("pgdr_monitor_rounds_total", "Monitor rounds", s.counters.get("rounds"))
        self.counter(
            "pgdr_notifications_failed_total",
            "Notification deliveries that failed (each is retried)",
            s.counters.get("notifications_failed"),
        )

    def _queries(self) -> None:
        q = self.snap.queries
        if q is None:
            return
        self.counter("pgdr_transactions_committed_total", "pg_stat_database.xact_commit", q.commits)
        self.counter(
            "pgdr_transactions_rolled_back_total", "pg_stat_database.xact_rollback", q.rollbacks
        )
        self.counter("pgdr_deadlocks_total", "pg_stat_database.deadlocks", q.deadlocks)
        hit = q.cache_hit_pct / 100 if q.cache_hit_pct is not None else None
        self.gauge("pgdr_cache_hit_ratio", "Buffer cache hit ratio (0-1)", hit)

    def _protection(self) -> None:
        backup = self.snap.facts("backup_age")
        self.gauge(
            "pgdr_last_backup_age_seconds", "Age of the newest backup", backup.get("age_seconds")
        )
        self.gauge(
            "pgdr_last_backup_size_bytes",
            "Stored size of the newest backup",
            backup.get("size_bytes"),
        )
        self.gauge(
            "pgdr_last_backup_duration_seconds",
            "Duration of the newest backup",
            backup.get("duration_seconds"),
        )
        failed = next(
            (c for c in self.snap.checks if c.name == "backup_failed" and not c.skipped), None
        )
        if failed is not None:
            self.gauge(
                "pgdr_last_backup_success", "1 when the last backup succeeded", int(failed.ok)
            )
        wal = self.snap.facts("wal_streamer")
        self.gauge("pgdr_wal_streamer_up", "1 when the WAL streamer is alive", wal.get("up"))
        self.gauge(
            "pgdr_wal_lag_bytes", "How far the repository trails the server", wal.get("lag_bytes")
        )
        self.gauge(
            "pgdr_wal_lag_seconds", "Age of the newest WAL while behind", wal.get("lag_seconds")
        )
        self.gauge(
            "pgdr_recovery_window_seconds",
            "Span a point-in-time restore can reach",
            wal.get("window_seconds"),
        )
        restore = self.snap.facts("restore_test")
        self.gauge(
            "pgdr_last_restore_test_age_seconds",
            "Age of the last restore test",
            restore.get("age_seconds"),
        )
        self.gauge(
            "pgdr_restore_test_rto_seconds",
            "Duration of the last passing restore test",
            restore.get("rto_seconds"),
        )
        drill = self.snap.facts("drill_overdue")
        self.gauge(
            "pgdr_last_drill_rto_seconds",
            "RTO measured by the last drill",
            drill.get("rto_seconds"),
        )
        self.gauge(
            "pgdr_last_drill_rpo_seconds",
            "RPO measured by the last drill",
            drill.get("rpo_seconds"),
        )

    def _incidents(self) -> None:
        counts = {s.value: 0.0 for s in Severity}
        for incident in self.snap.incidents:
            counts[str(incident["severity"])] += 1
        self.labelled("pgdr_incidents_open", "Open incidents by severity", "severity", counts)


def render_prometheus(snapshot: MetricsSnapshot, *more: MetricsSnapshot) -> bytes:
    """The snapshots (one per watched database) in Prometheus' text exposition format (a fresh
    registry each time); every series carries its database's ``database`` label."""
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(snapshot, *more))
    return generate_latest(registry)
