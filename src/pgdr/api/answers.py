"""What ``/api/health`` and ``/metrics`` answer, from results already in memory, on the event loop.

Under load almost every request finds its answer ready: the rendered body of the current health
results, or of the current monitor rounds, is kept, so such a request costs no JSON encoding, no
Prometheus rendering and no worker thread. What has to wait (a probe, the first round, one
rendering per round) runs in one worker thread at a time, shared by every request that waits
(:class:`SingleFlight`), so a flood of requests never queues up worker threads.

Health results are reused for the TTL (``--health-cache``) and never answered older than it:

* a result older than ``REFRESH_AHEAD`` of the TTL starts the next probe in the background and
  is still answered, so under steady load requests do not wait for probes;
* a stale result that says *unhealthy* is answered at once (503) while the next probe runs: an
  outage never makes requests wait for the connection timeout, and a recovery is seen at most
  one probe later;
* a stale result that says *healthy* is never answered: the request waits for the probe (at
  most the connection timeout, see :func:`pgdr.pool.check_database_health`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from starlette.concurrency import run_in_threadpool

from pgdr.monitoring.metrics import MetricsSnapshot, render_prometheus
from pgdr.monitoring.monitor import Monitor
from pgdr.pool.health import HealthReport, SharedProbe

REFRESH_AHEAD = 0.75  # share of the TTL after which a request starts the next probe
T = TypeVar("T")


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Collect a background task's outcome (a refresh nobody awaited must not log a warning)."""
    if not task.cancelled():
        task.exception()


class SingleFlight(Generic[T]):
    """``fn`` in a worker thread, one call at a time; callers meanwhile share its result."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._task: asyncio.Future[T] | None = None

    def start(self) -> asyncio.Future[T]:
        """The call in flight, or a new one; returns at once (the caller may not wait)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(run_in_threadpool(self._fn))
            self._task.add_done_callback(_retrieve)
        return self._task

    async def result(self) -> T:
        # shielded: a client that disconnects does not cancel the call the others wait for
        return await asyncio.shield(self.start())


def _same(kept: Sequence[object], current: Sequence[object]) -> bool:
    return len(kept) == len(current) and all(a is b for a, b in zip(kept, current, strict=True))


class HealthAnswers:
    """``/api/health``'s body and status from every watched database's :class:`SharedProbe`."""

    def __init__(self, probes: Sequence[SharedProbe], ttl_s: float) -> None:
        self._probes = list(probes)
        self._ttl_s = ttl_s
        self._ahead_s = ttl_s * REFRESH_AHEAD
        self._flight = SingleFlight(self._probe_all)
        self._rendered: tuple[list[HealthReport], bytes, int] | None = None

    def _probe_all(self) -> list[HealthReport]:
        """Every database at once (a database down costs one connection timeout, not one each);
        results younger than the refresh-ahead age are reused."""
        if len(self._probes) == 1:
            return [self._probes[0].get(self._ahead_s)]
        with ThreadPoolExecutor(len(self._probes), thread_name_prefix="pgdr-health") as pool:
            return list(pool.map(lambda p: p.get(self._ahead_s), self._probes))

    async def answer(self) -> tuple[bytes, int]:
        """(JSON body, HTTP status); see the module docstring for when it waits."""
        latest = [p.latest() for p in self._probes]
        known = [x for x in latest if x is not None]
        if len(known) == len(latest):
            reports = [report for report, _ in known]
            oldest = max(age for _, age in known)
            if oldest < self._ttl_s:
                if oldest >= self._ahead_s:
                    self._flight.start()
                return self._render(reports)
            if not all(r.healthy for r in reports):
                self._flight.start()
                return self._render(reports)
        return self._render(await self._flight.result())

    def _render(self, reports: list[HealthReport]) -> tuple[bytes, int]:
        kept = self._rendered
        if kept is not None and _same(kept[0], reports):
            return kept[1], kept[2]
        healthy = all(r.healthy for r in reports)
        latencies = [r.latency_ms for r in reports if r.latency_ms is not None]
        body = {"healthy": healthy, "latency": max(latencies) if latencies else None}
        encoded = json.dumps(body, separators=(",", ":")).encode()
        code = 200 if healthy else 503
        self._rendered = (reports, encoded, code)
        return encoded, code


class PrometheusAnswers:
    """``/metrics``: every watched database's latest round, rendered once per round."""

    def __init__(self, monitors: Sequence[Monitor]) -> None:
        self._monitors = list(monitors)
        self._flight = SingleFlight(self._render)
        self._rendered: tuple[list[MetricsSnapshot], bytes] | None = None

    def _render(self) -> bytes:
        # before a database's first round is in, this runs one (as the JSON endpoints do)
        snapshots = [m.last or m.run_once() for m in self._monitors]
        body = render_prometheus(*snapshots)
        self._rendered = (snapshots, body)
        return body

    async def answer(self) -> bytes:
        kept = self._rendered
        if kept is not None and _same(kept[0], [m.last for m in self._monitors]):
            return kept[1]
        return await self._flight.result()
