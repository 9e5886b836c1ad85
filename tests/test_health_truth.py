"""Health that matches what the application sees, and cannot exhaust the database."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from conftest import Server, run_cli
from pgdr.api.answers import HealthAnswers
from pgdr.cluster import LocalCluster, choose_installation, find_free_port, find_installations
from pgdr.config import PgdrSettings
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
    assert shared.fresh() is results[0]  # what the async endpoint answers from, never blocking
    again = SharedProbe(probe, ttl_s=0)
    assert again.fresh() is None  # nothing probed yet
    again.get()
    assert again.fresh() is None  # a stale result is never offered
    again.get()
    assert calls == 3  # a stale result is never reused


def test_health_answers_share_one_probe_and_wait_only_for_a_stale_healthy_result(
    pg18: Server,
) -> None:
    """/api/health's answers (pgdr.api.answers), with the probe held until released: 200
    concurrent requests share one probe; once the last result is stale, an outage is answered
    at once while the next probe runs in the background, a healthy result never (the request
    waits for the probe)."""
    up, down = pg18.new_database(), f"postgresql://postgres@127.0.0.1:{find_free_port()}/x"
    release, calls = threading.Event(), []

    def held(conninfo: str, ttl_s: float) -> HealthAnswers:
        def probe() -> HealthReport:
            calls.append(conninfo)
            release.wait(10)
            return check_database_health(conninfo, PoolSettings())

        return HealthAnswers([SharedProbe(probe, ttl_s)], ttl_s)

    async def scenario() -> None:
        shared = held(up, 60)
        first = [asyncio.ensure_future(shared.answer()) for _ in range(200)]
        await asyncio.sleep(0.3)  # every request is waiting while the one probe is held
        assert not any(f.done() for f in first)
        release.set()
        answered = await asyncio.gather(*first)
        assert calls == [up] and answered[0][1] == 200 and set(answered) == {answered[0]}

        outage = held(down, 0)
        assert (await outage.answer())[1] == 503  # nothing known yet: waits for the probe
        release.clear()
        assert (await outage.answer())[1] == 503  # known and stale: at once, probe held
        await asyncio.sleep(0.3)
        assert calls == [up, down, down]  # ... while the next probe runs in the background
        release.set()

        healthy = held(up, 0)
        assert (await healthy.answer())[1] == 200
        release.clear()
        waiting = asyncio.ensure_future(healthy.answer())
        await asyncio.sleep(0.3)
        assert not waiting.done()  # a stale "healthy" is never answered
        release.set()
        assert (await waiting)[1] == 200

    asyncio.run(scenario())


@pytest.fixture(
    params=[m for m in (18, 15) if m in {i.major for i in find_installations()}],
    ids=lambda m: f"pg{m}",
)
def crowded(settings: PgdrSettings, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A cluster with 3 normal connection slots (max_connections 6, 3 for superusers)."""
    cluster = LocalCluster(
        settings.home / "clusters" / f"slots{os.getpid()}_{request.param}", settings
    )
    cluster.create(choose_installation(None, request.param))
    cluster.start()
    try:
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_connections = 6")
            conn.execute("ALTER SYSTEM SET superuser_reserved_connections = 3")
            conn.execute("CREATE ROLE app LOGIN")
        cluster.stop()
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        cluster.destroy()


def test_app_locked_out_is_unhealthy(crowded: LocalCluster, cli_env: dict[str, str]) -> None:
    app_url = crowded.conninfo().replace("postgresql://postgres@", "postgresql://app@")
    assert "app@" in app_url
    env = cli_env | {"DATABASE_URL": app_url}
    healthy = run_cli("health", "--json", env=env)
    assert healthy.code == 0, healthy.stdout + healthy.stderr
    holders = [psycopg.connect(app_url) for _ in range(3)]  # every normal slot
    try:
        as_app = run_cli("health", "--json", env=env)
        assert as_app.code == 1
        assert "connection slots are taken" in json.loads(as_app.stdout)["error"]
        as_admin = run_cli("health", env=cli_env | {"DATABASE_URL": crowded.conninfo()})
        assert as_admin.code == 1, as_admin.stdout  # not "healthy" via a superuser slot
        assert "application" in as_admin.stdout and "cannot connect" in as_admin.stdout
    finally:
        for conn in holders:
            conn.close()


def test_health_exits_1_when_the_embedded_database_is_down(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    result = run_cli("health", "--json", env=cli_env | {"PGDR_HOME": str(tmp_path)})
    assert result.code == 1, result.stderr
    assert json.loads(result.stdout)["healthy"] is False


def test_pool_advise_takes_the_plan_limit(db18: str, cli_env: dict[str, str]) -> None:
    env = cli_env | {"DATABASE_URL": db18, "DB_POOL_MAX": "10"}
    free = run_cli("pool", "advise", "--limit", "free", "--json", env=env)
    assert free.code == 0, free.stderr
    data = json.loads(free.stdout)
    assert (data["usable"], data["recommended_low"], data["recommended_high"]) == (60, 36, 42)
    pro = json.loads(run_cli("pool", "advise", "--limit", "pro", "--json", env=env).stdout)
    assert (pro["recommended_low"], pro["recommended_high"]) == (120, 140)
    tiny = run_cli("pool", "advise", "--limit", "3", "--instances", "4", env=env)
    assert tiny.code == 1
    assert "0-0" not in tiny.stdout and "less than one connection per instance" in tiny.stdout
    bad = run_cli("pool", "advise", "--limit", "gold", env=env)
    assert bad.code == 2 and "free (60)" in bad.stderr


def test_monitor_works_while_the_database_is_down(cli_env: dict[str, str]) -> None:
    home = Path(cli_env["PGDR_HOME"]) / f"down-home{os.getpid()}"  # the service user can enter
    env = cli_env | {"PGDR_HOME": str(home)}
    started = run_cli("db", "start", env=env)
    assert started.code == 0, started.stderr
    assert run_cli("db", "stop", env=env).code == 0
    try:
        health = run_cli("health", env=env)
        assert health.code == 1 and "not running" in health.stdout
        round_ = run_cli("monitor", "run", "--once", "--json", env=env)
        assert round_.code == 1, round_.stderr
        listed = run_cli("monitor", "incidents", "--json", env=env)
        assert listed.code == 0, listed.stderr
        incidents = json.loads(listed.stdout)
        assert any(i["severity"] == "P0" for i in incidents), incidents
        records = home / "records"
        for path in [*records.glob("incidents/*.json"), *records.glob("checks/*.jsonl")]:
            assert path.stat().st_mode & 0o077 == 0, path
    finally:
        run_cli("db", "destroy", "--yes", env=env)
