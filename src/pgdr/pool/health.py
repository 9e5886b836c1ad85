"""``check_database_health()``: the runbook's health probe, bounded by the connection timeout.

The probe runs in a daemon thread and the caller waits at most the connection timeout, so a
server that is down, unreachable, or accepting connections but never answering cannot hang it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from pgdr.config.pool_settings import PoolSettings
from pgdr.core.connect import connect as core_connect
from pgdr.core.connect import describe_connect_error


@dataclass
class HealthReport:
    """``{healthy, latency_ms, pool, error}`` as the runbook's ``checkDatabaseHealth`` returns."""

    healthy: bool
    latency_ms: float | None
    error: str | None = None
    server_version: str | None = None
    pool: dict[str, int] | None = None
    checked_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _probe_once(
    conninfo: str, settings: PoolSettings, pool: ConnectionPool | None
) -> tuple[float, str]:
    started = time.perf_counter()
    statement_timeout = f"SET statement_timeout = {int(settings.connection_timeout_ms)}"
    if pool is not None:
        with pool.connection(timeout=settings.connection_timeout_s) as conn:
            conn.execute(statement_timeout)
            row = conn.execute("SELECT current_setting('server_version')").fetchone()
    else:
        with core_connect(
            conninfo, timeout_s=settings.connection_timeout_s, raw_errors=True
        ) as conn:
            conn.execute(statement_timeout)
            row = conn.execute("SELECT current_setting('server_version')").fetchone()
    latency = (time.perf_counter() - started) * 1000
    return latency, str(row[0]) if row else ""


def check_database_health(
    conninfo: str, settings: PoolSettings | None = None, pool: ConnectionPool | None = None
) -> HealthReport:
    """Probe the database once; never blocks longer than ``DB_CONNECTION_TIMEOUT`` (+ 0.5 s)."""
    settings = settings or PoolSettings()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = _probe_once(conninfo, settings, pool)
        except Exception as exc:  # any failure is the report's content, not a crash
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="pgdr-health", daemon=True)
    worker.start()
    worker.join(settings.connection_timeout_s + 0.5)
    stats = _pool_stats(pool)
    if "result" in outcome:
        latency, version = outcome["result"]
        return HealthReport(True, round(latency, 2), None, version, stats)
    if "error" in outcome:
        return HealthReport(False, None, _describe(outcome["error"]), None, stats)
    return HealthReport(
        False,
        None,
        f"The database did not answer within {settings.connection_timeout_ms} ms.",
        None,
        stats,
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, psycopg.OperationalError):
        return "Cannot connect: " + describe_connect_error(exc)
    name = type(exc).__name__
    if name == "PoolTimeout":
        return "No pooled connection became free before the connection timeout."
    return f"{name}: {str(exc).strip() or 'no detail'}"


def _pool_stats(pool: ConnectionPool | None) -> dict[str, int] | None:
    if pool is None:
        return None
    return {k: int(v) for k, v in pool.get_stats().items()}
