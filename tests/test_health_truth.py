"""Health that matches what the application sees, and cannot exhaust the database."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import Server
from pgdr.config.pool_settings import PoolSettings
from pgdr.pool import check_database_health
from pgdr.pool.health import HealthReport, SharedProbe


def test_health_probe_is_single_flight(pg18: Server) -> None:
    db = pg18.new_database()
    release = threading.Event()
    calls = 0

    def probe() -> HealthReport:
        nonlocal calls
        calls += 1
        release.wait(10)
        return check_database_health(db, PoolSettings())

    shared = SharedProbe(probe, ttl_s=60)
    with ThreadPoolExecutor(22) as pool:
        futures = [pool.submit(shared.get) for _ in range(22)]
        time.sleep(0.5)  # let every request arrive while the one probe is in flight
        release.set()
        results = [f.result() for f in futures]
    assert calls == 1
    assert all(r is results[0] for r in results) and results[0].healthy
    assert shared.get() is results[0]  # fresh: reused
    again = SharedProbe(probe, ttl_s=0)
    again.get()
    again.get()
    assert calls == 3  # a stale result is never reused
