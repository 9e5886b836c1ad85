"""Read-only mode on a real server: new sessions, existing sessions, server scope, lifting it."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from conftest import run_cli
from pgdr.cluster import LocalCluster, choose_installation
from pgdr.config import PgdrSettings
from pgdr.incident import read_only_status, set_read_only
from pgdr.incident.readonly import Scope

INSERT = "INSERT INTO users (id, email, full_name) VALUES (gen_random_uuid(), %s, 'x')"


def _can_write(conn: psycopg.Connection[object], email: str) -> bool:
    try:
        with conn.transaction():
            conn.execute(INSERT, (email,))
    except psycopg.errors.ReadOnlySqlTransaction:
        return False
    return True


def test_database_scope_with_and_without_terminate(db18: str) -> None:
    existing = psycopg.connect(db18, autocommit=True)
    with psycopg.connect(db18, autocommit=True) as admin:
        state = set_read_only(admin, True)
        assert state.database_read_only and state.effective
    with psycopg.connect(db18, autocommit=True) as fresh:
        assert not _can_write(fresh, "new@x")
    assert _can_write(existing, "old@x")  # settings of existing sessions do not change
    with psycopg.connect(db18, autocommit=True) as admin:
        state = set_read_only(admin, True, terminate=True)
        assert state.terminated_sessions >= 1
    with pytest.raises(psycopg.OperationalError):
        existing.execute("SELECT 1")
    with psycopg.connect(db18, autocommit=True) as admin:
        state = set_read_only(admin, False)
        assert not state.effective
    with psycopg.connect(db18, autocommit=True) as fresh:
        assert _can_write(fresh, "after@x")


def test_server_scope_reaches_existing_sessions(settings: PgdrSettings) -> None:
    cluster = LocalCluster(settings.home / "clusters" / "readonly", settings)
    cluster.create(choose_installation(None, 18))
    cluster.start()
    try:
        with (
            psycopg.connect(cluster.conninfo(), autocommit=True) as conn,
            psycopg.connect(cluster.conninfo(), autocommit=True) as admin,
        ):
            conn.execute("CREATE TABLE t (x int)")
            set_read_only(admin, True, Scope.SERVER)
            assert read_only_status(admin).server_read_only
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    conn.execute("INSERT INTO t VALUES (1)")
                except psycopg.errors.ReadOnlySqlTransaction:
                    break
                time.sleep(0.1)
            else:
                pytest.fail("the existing session could still write")
            set_read_only(admin, False, Scope.SERVER)
            time.sleep(0.5)
            conn.execute("INSERT INTO t VALUES (2)")
    finally:
        cluster.destroy()


def test_readonly_cli(db18: str, cli_env: dict[str, str]) -> None:
    env = cli_env | {"DATABASE_URL": db18}
    assert run_cli("readonly", "status", env=env).code == 0
    result = run_cli("readonly", "on", "--json", env=env)
    assert result.code == 0 and json.loads(result.stdout)["database_read_only"] is True
    assert run_cli("readonly", "status", env=env).code == 1
    assert run_cli("readonly", "off", env=env).code == 0
    assert run_cli("readonly", "status", "--json", env=env).code == 0
