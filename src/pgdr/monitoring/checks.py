"""Checks: each turns an observation into ok / not ok with a runbook severity.

A check that cannot run (the database is down) is reported as skipped, never as passing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg_pool import ConnectionPool

from pgdr.config.pool_settings import PoolSettings
from pgdr.core.severity import Severity
from pgdr.monitoring.reports import DatabaseReport, collect_report
from pgdr.pool import HealthReport, check_database_health, connect


@dataclass(frozen=True)
class MonitorConfig:
    """Thresholds; the defaults are the runbook's numbers where it gives any."""

    slow_latency_ms: float = 2000  # P1: "degraded database performance (> 2s query times)"
    long_query_seconds: float = 300  # the runbook's long-running query check: 5 minutes
    connections_high_pct: float = 90  # P1: connection exhaustion is near
    dead_tuple_floor: int = 1000  # the runbook's bloat query: n_dead_tup > 1000
    bloat_pct: float = 20  # P3: an optimisation opportunity
    interval_seconds: float = 120  # the runbook's uptime check: every 2 minutes


@dataclass
class CheckResult:
    name: str
    ok: bool
    severity: Severity | None
    message: str
    value: float | None = None
    skipped: bool = False
    details: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["severity"] = self.severity.value if self.severity else None
        return data


def passed(name: str, message: str, value: float | None = None) -> CheckResult:
    return CheckResult(name, True, None, message, value)


def skipped(name: str, reason: str) -> CheckResult:
    """A check that could not run: neither a pass nor a failure."""
    return CheckResult(name, False, None, f"skipped: {reason}", skipped=True)


def failed(
    name: str,
    severity: Severity,
    message: str,
    value: float | None = None,
    details: list[dict[str, Any]] | None = None,
) -> CheckResult:
    return CheckResult(name, False, severity, message, value, details=details or [])


def check_up(health: HealthReport) -> CheckResult:
    if health.healthy:
        return passed("database_up", "the database answers", 1)
    return failed("database_up", Severity.P0, f"complete database outage: {health.error}", 0)


def check_latency(health: HealthReport, config: MonitorConfig) -> CheckResult:
    latency = health.latency_ms or 0.0
    if latency > config.slow_latency_ms:
        return failed(
            "latency",
            Severity.P1,
            f"degraded performance: a trivial query took {latency:.0f} ms",
            latency,
        )
    return passed("latency", f"{latency:.1f} ms", latency)


def check_connections(report: DatabaseReport, config: MonitorConfig) -> CheckResult:
    pct = 100.0 * report.connections / max(1, report.max_connections)
    message = f"{report.connections} of {report.max_connections} connections in use"
    if pct >= config.connections_high_pct:
        return failed("connections", Severity.P1, message + " (exhaustion near)", pct)
    return passed("connections", message, pct)


def check_pool(stats: dict[str, int] | None) -> CheckResult | None:
    if stats is None:
        return None
    waiting = stats.get("requests_waiting", 0)
    if waiting > 0 and stats.get("pool_available", 0) == 0:
        return failed(
            "pool", Severity.P1, f"connection pool exhausted: {waiting} requests waiting", waiting
        )
    return passed("pool", f"{stats.get('pool_size', 0)} of {stats.get('pool_max', 0)} open", 0)


def check_long_queries(report: DatabaseReport, config: MonitorConfig) -> CheckResult:
    if report.long_queries:
        longest = report.long_queries[0]
        return failed(
            "long_running_queries",
            Severity.P2,
            f"{len(report.long_queries)} queries running over {config.long_query_seconds:.0f} s "
            f"(longest {longest.seconds:.0f} s, pid {longest.pid})",
            len(report.long_queries),
            [asdict(q) for q in report.long_queries],
        )
    return passed("long_running_queries", "none", 0)


def check_bloat(report: DatabaseReport, config: MonitorConfig) -> CheckResult:
    bloated = [b for b in report.bloat if (b.dead_pct or 0) >= config.bloat_pct]
    if bloated:
        names = ", ".join(f"{b.table} ({b.dead_pct}% dead)" for b in bloated)
        return failed(
            "bloat",
            Severity.P3,
            f"tables to vacuum: {names}",
            len(bloated),
            [asdict(b) for b in bloated],
        )
    return passed("bloat", "no table over the bloat threshold", 0)


ExtraCheck = Callable[[], CheckResult]


def run_checks(
    conninfo: str,
    settings: PoolSettings | None = None,
    config: MonitorConfig | None = None,
    pool: ConnectionPool | None = None,
    extra: list[ExtraCheck] | None = None,
) -> tuple[list[CheckResult], DatabaseReport | None]:
    """Run every check; the report is None when the database could not be reached."""
    settings = settings or PoolSettings()
    config = config or MonitorConfig()
    health = check_database_health(conninfo, settings, pool)
    results = [check_up(health)]
    report: DatabaseReport | None = None
    if health.healthy:
        results.append(check_latency(health, config))
        with connect(conninfo, settings) as conn:
            report = collect_report(conn, config.long_query_seconds, config.dead_tuple_floor)
        results += [
            check_connections(report, config),
            check_long_queries(report, config),
            check_bloat(report, config),
        ]
        pool_result = check_pool(health.pool)
        if pool_result is not None:
            results.append(pool_result)
    else:
        for name in ("latency", "connections", "long_running_queries", "bloat"):
            results.append(skipped(name, "database unreachable"))
    results += [check() for check in extra or []]
    return results, report
