"""High-availability faults on real PostgreSQL 15: every host of the target down, no standby to
back up from, the slot gone from the primary. Each ends in one sentence and an incident, and
nothing already stored is written over."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from conftest import run_cli
from fixtures.wal import WalEnv, pgdr_environment
from pgdr.cluster import find_free_port
from pgdr.config import PgdrSettings

pytestmark = pytest.mark.slow


def one_sentence(text: str) -> bool:
    lines = [line for line in text.strip().splitlines() if "error" in line.lower()]
    return len(lines) == 1


def test_all_hosts_down_is_one_sentence_and_an_incident(
    settings: PgdrSettings, tmp_path: Path
) -> None:
    ports = [find_free_port(), find_free_port()]
    url = f"host=127.0.0.1,127.0.0.1 port={ports[0]},{ports[1]} user=postgres dbname=postgres"
    env = pgdr_environment(settings, tmp_path / "repo", url)
    for args in (["backup"], ["backup", "--from", "standby"], ["wal", "stream"]):
        out = run_cli(*args, env=env, timeout=120)
        assert out.code == 3, (args, out.stdout, out.stderr)
        assert one_sentence(out.stderr), out.stderr
    assert not (tmp_path / "repo" / "backups").exists() or not any(
        (tmp_path / "repo" / "backups").iterdir()
    )
    monitored = run_cli("monitor", "run", "--once", "--json", env=env, timeout=120)
    assert monitored.code == 1
    failing = {c["name"] for c in json.loads(monitored.stdout)["checks"] if not c["ok"]}
    assert "database_up" in failing
    opened = json.loads(run_cli("monitor", "incidents", "--json", env=env).stdout)
    assert any(i.get("check") == "database_up" for i in opened), opened


def test_slot_dropped_on_the_primary_is_recreated_with_an_incident(walenv15: WalEnv) -> None:
    w = walenv15
    w.start_stream()
    w.insert(3)

    def streaming() -> bool:
        return bool(w.sql("SELECT 1 FROM pg_stat_replication WHERE application_name='pgdr'"))

    w.wait_for(streaming, 60, "the streamer connected")
    # the slot vanishes (a new primary without it behaves the same): kill the walsender,
    # drop the slot before pg_receivewal comes back
    with psycopg.connect(w.conninfo, autocommit=True) as conn:

        def dropped() -> bool:
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                " WHERE slot_name = 'pgdr' AND active_pid IS NOT NULL"
            )
            try:
                conn.execute("SELECT pg_drop_replication_slot('pgdr')")
            except psycopg.errors.ObjectInUse:
                return False
            return True

        w.wait_for(dropped, 30, "the slot dropped")
    incidents = w.repo / "incidents"
    w.wait_for(
        lambda: (
            incidents.is_dir() and any("wal-slot-missing" in p.name for p in incidents.iterdir())
        ),
        60,
        "the wal-slot-missing incident",
    )
    assert w.sql("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pgdr'")
    opened = json.loads(w.cli("monitor", "incidents", "--json").stdout)
    assert any(i.get("check") == "wal-slot-missing" for i in opened), opened
    w.insert(3)
    w.wait_for(streaming, 60, "the streamer back on the recreated slot")
