"""`readonly off` restores exactly what `on` found; `off --scope server` really makes it writable."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest

from pgdr.cluster import LocalCluster, choose_installation, find_installations
from pgdr.config import PgdrSettings
from pgdr.incident import read_only_status, set_read_only
from pgdr.incident.readonly import Scope


@pytest.fixture(
    params=[m for m in (18, 15) if m in {i.major for i in find_installations()}],
    ids=lambda m: f"pg{m}",
)
def cluster(settings: PgdrSettings, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    found = LocalCluster(settings.home / "clusters" / f"ro{os.getpid()}_{request.param}", settings)
    found.create(choose_installation(None, request.param))
    found.start()
    try:
        yield found
    finally:
        found.stop()
        found.destroy()


def _writable(conninfo: str) -> bool:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SHOW default_transaction_read_only").fetchone()
        return row is not None and row[0] == "off"


def test_off_restores_what_on_found(cluster: LocalCluster) -> None:
    with psycopg.connect(cluster.conninfo(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE archive")
        admin.execute("ALTER DATABASE archive SET default_transaction_read_only = on")
    archive = cluster.conninfo("archive")
    with psycopg.connect(archive, autocommit=True) as conn:
        assert set_read_only(conn, True).database_read_only
        off = set_read_only(conn, False)
    assert off.kept_read_only and off.database_read_only
    assert "was already read-only" in off.message
    assert not _writable(archive)
    # a database that was writable before comes back writable
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        set_read_only(conn, True)
        set_read_only(conn, True)  # twice: still remembers the first state
        assert not set_read_only(conn, False).kept_read_only
    assert _writable(cluster.conninfo())


def test_server_off_overrides_postgresql_conf(cluster: LocalCluster) -> None:
    with (cluster.data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\ndefault_transaction_read_only = on\n")
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
        assert read_only_status(conn).server_read_only
        state = set_read_only(conn, False, Scope.SERVER)
    assert not state.server_read_only and not state.effective, state
    assert _writable(cluster.conninfo())
