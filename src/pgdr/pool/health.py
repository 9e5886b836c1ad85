"""``check_database_health()``: the runbook's health probe, bounded by the connection timeout.

The probe runs in a daemon thread and the caller waits at most the connection timeout, so a
server that is down, unreachable, or accepting connections but never answering cannot hang it.

:class:`SharedProbe` is what a public endpoint uses: at most one probe is in flight, concurrent
callers wait for that one and share its result, and a result younger than ``ttl_s`` is reused, so
no number of requests can open more than one connection at a time.

The probe connects as the target's role (``DATABASE_URL``: the application's), so a server whose
normal connection slots are all taken is an outage: the application's role is refused ("too many
clients") and, when the probe's role is a superuser that got in through a reserved slot, the
count of client backends against ``max_connections`` minus the reserved slots says the
application is locked out. Either way the report is unhealthy (the monitor makes that P0).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from pgdr.config.pool_settings import PoolSettings
from pgdr.core.connect import connect as core_connect
from pgdr.core.connect import describe_connect_error
from pgdr.core.errors import RuntimeFailure
from pgdr.pool.factory import make_pool


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


_SLOTS = """
SELECT current_setting('server_version'), r.rolsuper,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
         + coalesce(current_setting('reserved_connections', true), '0')::int
FROM pg_roles r WHERE r.rolname = current_user
"""


def _probe_once(
    conninfo: str, settings: PoolSettings, pool: ConnectionPool | None
) -> tuple[float, str, str | None]:
    """(latency ms, server version, why the application is locked out or None)."""
    started = time.perf_counter()
    statement_timeout = f"SET statement_timeout = {int(settings.connection_timeout_ms)}"
    if pool is not None:
        with pool.connection(timeout=settings.connection_timeout_s) as conn:
            conn.execute(statement_timeout)
            row = conn.execute(_SLOTS).fetchone()
    else:
        with core_connect(
            conninfo, timeout_s=settings.connection_timeout_s, raw_errors=True
        ) as conn:
            conn.execute(statement_timeout)
            row = conn.execute(_SLOTS).fetchone()
    latency = (time.perf_counter() - started) * 1000
    if row is None:
        return latency, "", None
    version, superuser, clients, max_connections, reserved = row
    locked_out = None
    if superuser and int(clients) > int(max_connections) - int(reserved):
        locked_out = (
            f"All normal connection slots are taken ({int(clients)} client connections of "
            f"{int(max_connections)}, {int(reserved)} reserved for superusers): the application "
            "cannot connect; only this superuser probe got in."
        )
    return latency, str(version), locked_out


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
        latency, version, locked_out = outcome["result"]
        return HealthReport(locked_out is None, round(latency, 2), locked_out, version, stats)
    if "error" in outcome:
        return HealthReport(False, None, _describe(outcome["error"]), None, stats)
    return HealthReport(
        False,
        None,
        f"The database did not answer within {settings.connection_timeout_ms} ms.",
        None,
        stats,
    )


def target_health(
    resolve: Callable[[], str], pool_settings: PoolSettings, use_pool: bool = False
) -> HealthReport:
    """``pgdr health``: the health of the database ``resolve()`` names; one it cannot name at
    all (the embedded database stopped) is unhealthy, never an error of the command."""
    try:
        conninfo = resolve()
    except RuntimeFailure as exc:
        return HealthReport(False, None, exc.message)
    if not use_pool:
        return check_database_health(conninfo, pool_settings)
    with make_pool(conninfo, pool_settings, open_now=False) as pool:
        return check_database_health(conninfo, pool_settings, pool)


def _describe(exc: BaseException) -> str:
    if "too many clients" in str(exc) or "connection slots are reserved" in str(exc):
        return (
            "All normal connection slots are taken: the application's role cannot connect "
            "(the server refused it: too many clients)."
        )
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


class SharedProbe:
    """Single-flight health probing with a short reuse window (see the module docstring)."""

    def __init__(self, probe: Callable[[], HealthReport], ttl_s: float = 1.0) -> None:
        self._probe = probe
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._done: threading.Event | None = None  # set when the probe in flight finishes
        self._last: tuple[HealthReport, float] | None = None  # the result and when, one object
        self.probes = 0  # how many probes actually ran

    def fresh(self) -> HealthReport | None:
        """The last result while it is younger than ``ttl_s``, else None; never blocks, so an
        async endpoint can answer from it on its event loop."""
        last = self._last  # one read: the report and its time always belong together
        if last is not None and time.monotonic() - last[1] < self._ttl_s:
            return last[0]
        return None

    def latest(self) -> tuple[HealthReport, float] | None:
        """The last result and its age in seconds however old, or None before the first probe;
        never blocks."""
        last = self._last
        return None if last is None else (last[0], time.monotonic() - last[1])

    def get(self, max_age_s: float | None = None) -> HealthReport:
        """A result younger than ``ttl_s`` (and than ``max_age_s`` when given: a caller probing
        ahead of expiry), else the probe in flight's, else a new probe's."""
        with self._lock:
            last = self._last
            limit = self._ttl_s if max_age_s is None else min(self._ttl_s, max_age_s)
            if last is not None and time.monotonic() - last[1] < limit:
                return last[0]
            done, leader = self._done, self._done is None
            if leader:
                done = self._done = threading.Event()
        assert done is not None
        if not leader:
            done.wait()
            assert self._last is not None
            return self._last[0]
        try:
            report = self._probe()
        except Exception as exc:  # the probe itself never raises; be safe for the followers
            report = HealthReport(False, None, f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._last, self._done = (report, time.monotonic()), None
            self.probes += 1
        done.set()
        return report
