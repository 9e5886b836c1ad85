"""The pool built from the runbook's settings, the bounded health check, and sizing advice."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from conftest import Server, run_cli
from pgdr.cluster import find_free_port
from pgdr.config.pool_settings import PoolSettings, resolve_pool_settings
from pgdr.pool import advise_pool, check_database_health, connect, make_pool


def test_pool_maps_runbook_settings(pg18: Server) -> None:
    settings = resolve_pool_settings({}, environ={"PGDR_ENV": "development"}).settings
    with make_pool(pg18.cluster.conninfo(), settings, open_now=True) as pool:
        pool.wait(timeout=10)
        assert (pool.min_size, pool.max_size) == (1, 5)
        assert pool.timeout == 5.0
        assert pool.max_idle == 60.0
        assert pool.max_lifetime == 300.0
        assert pool.kwargs["connect_timeout"] == 5
        report = check_database_health(pg18.cluster.conninfo(), settings, pool)
    assert report.healthy and report.latency_ms is not None
    assert report.pool is not None and report.pool["pool_max"] == 5


def test_healthy_on_both_versions(server: Server) -> None:
    report = check_database_health(server.cluster.conninfo())
    assert report.healthy, report.error
    assert report.server_version and report.server_version.startswith(str(server.major))


def test_refused_connection_is_unhealthy_at_once() -> None:
    port = find_free_port()
    started = time.monotonic()
    report = check_database_health(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    assert not report.healthy
    assert report.error and "refused" in report.error
    assert time.monotonic() - started < 5


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word (a hung database)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_hung_server_never_blocks_longer_than_the_timeout(silent_server: int) -> None:
    settings = PoolSettings(connection_timeout_ms=2000)
    started = time.monotonic()
    report = check_database_health(
        f"postgresql://postgres@127.0.0.1:{silent_server}/postgres", settings
    )
    elapsed = time.monotonic() - started
    assert not report.healthy
    assert elapsed < 3.5, elapsed
    with make_pool(
        f"postgresql://postgres@127.0.0.1:{silent_server}/postgres", settings, open_now=False
    ) as pool:
        started = time.monotonic()
        report = check_database_health(pool.conninfo, settings, pool)
        assert not report.healthy
        assert time.monotonic() - started < 3.5


def test_wrong_password_is_named(pg18: Server) -> None:
    url = pg18.cluster.tcp_url().replace("postgres@", "postgres:wrong@")
    report = check_database_health(url)
    assert not report.healthy
    assert report.error and "password" in report.error


def test_advise_applies_the_60_70_rule(pg18: Server) -> None:
    with connect(pg18.cluster.conninfo()) as conn:
        ok = advise_pool(conn, PoolSettings())
        assert ok.max_connections == 100 and ok.usable == ok.max_connections - ok.reserved
        assert (ok.recommended_low, ok.recommended_high) == (
            int(ok.usable * 0.6),
            int(ok.usable * 0.7),
        )
        assert not ok.over_limit
        over = advise_pool(conn, PoolSettings(max_size=20), instances=4)
        assert over.over_limit and "DB_POOL_MAX=20 is over" in over.message


def test_health_and_advise_cli(pg18: Server, cli_env: dict[str, str]) -> None:
    env = cli_env | {"DATABASE_URL": pg18.cluster.conninfo()}
    result = run_cli("health", "--json", "--pool", env=env)
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["healthy"] is True and data["pool"]["pool_max"] == 20
    assert run_cli("pool", "advise", env=env).code == 0
    over = run_cli("pool", "advise", "--json", env=env | {"DB_POOL_MAX": "90"})
    assert over.code == 1 and json.loads(over.stdout)["over_limit"] is True
    down = env | {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{find_free_port()}/x"}
    result = run_cli("health", env=down)
    assert result.code == 1 and "unhealthy" in result.stdout
