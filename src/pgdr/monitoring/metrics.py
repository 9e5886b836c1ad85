"""Metrics for dashboards and Prometheus: latency, pool, query performance, error rates.

The same snapshot feeds ``GET /api/monitoring/metrics`` (JSON, the runbook's endpoint) and
``GET /metrics`` (Prometheus text format), so the two never disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Gauge, generate_latest

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
    extra: dict[str, Any] = field(default_factory=dict)

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
        }


def render_prometheus(snapshot: MetricsSnapshot) -> bytes:
    """The snapshot in Prometheus' text exposition format (a fresh registry each time)."""
    registry = CollectorRegistry()

    def gauge(
        name: str, doc: str, value: float | None, labels: dict[str, str] | None = None
    ) -> None:
        if value is None:
            return
        metric = Gauge(name, doc, list(labels or {}), registry=registry)
        (metric.labels(**labels) if labels else metric).set(value)

    gauge("pgdr_database_up", "1 when the database answers the health check", int(snapshot.healthy))
    gauge(
        "pgdr_database_latency_ms", "Health check round trip in milliseconds", snapshot.latency_ms
    )
    gauge("pgdr_open_incidents", "Incidents not yet resolved", snapshot.open_incidents)
    gauge(
        "pgdr_failed_checks_total",
        "Failed checks since the monitor started",
        snapshot.failed_checks_total,
    )
    if snapshot.report is not None:
        gauge("pgdr_connections", "Client connections", snapshot.report.connections)
        gauge("pgdr_max_connections", "Server max_connections", snapshot.report.max_connections)
        gauge(
            "pgdr_long_running_queries",
            "Queries over the long-query threshold",
            len(snapshot.report.long_queries),
        )
        sizes = Gauge("pgdr_table_bytes", "Total relation size", ["table"], registry=registry)
        for table in snapshot.report.tables:
            sizes.labels(table=table.table).set(table.bytes)
    if snapshot.pool:
        pool = Gauge("pgdr_pool", "psycopg_pool statistics", ["stat"], registry=registry)
        for key, value in snapshot.pool.items():
            pool.labels(stat=key).set(value)
    if snapshot.queries is not None:
        q = snapshot.queries
        gauge("pgdr_transactions_committed", "pg_stat_database.xact_commit", q.commits)
        gauge("pgdr_transactions_rolled_back", "pg_stat_database.xact_rollback", q.rollbacks)
        gauge("pgdr_deadlocks", "pg_stat_database.deadlocks", q.deadlocks)
        gauge("pgdr_cache_hit_pct", "Buffer cache hit ratio", q.cache_hit_pct)
    checks = Gauge("pgdr_check_ok", "1 when the check passed", ["check"], registry=registry)
    for check in snapshot.checks:
        if not check.skipped:
            checks.labels(check=check.name).set(int(check.ok))
    return generate_latest(registry)
