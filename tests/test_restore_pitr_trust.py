"""Point-in-time restores that must not mislead: stopping just before a bad transaction, an
unreached target, a repository that lost its newest backups or WAL, a full disk, a read-only
repository, and what a killed restore leaves behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from fixtures.wal import WalEnv
from pgdr.backup.repository import repository_at
from pgdr.wal.archive import repository_archive
from pgdr.wal.names import is_partial, parse_lsn, parse_segment, partial_piece, segment_of_lsn
from test_pitr import backup, ids, restore, stop_restored, wait_streamed


def streamed_backup(w: WalEnv) -> str:
    """Rows, a base backup and the WAL after it in the repository; the streamer stopped."""
    stream = w.start_stream()
    w.insert(10)
    backup_id = backup(w)
    wait_streamed(w)
    w.stop_stream(stream)
    return backup_id


def _delete_in_one_transaction(w: WalEnv, below: int) -> str:
    """DELETE rows in one transaction; returns its transaction id."""
    with psycopg.connect(w.conninfo) as conn:
        conn.execute("DELETE FROM txlog WHERE id <= %s", (below,))
        row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
        assert row is not None
        conn.commit()
    return str(row[0])


@pytest.mark.slow
def test_exclusive_xid_gives_the_state_before_a_delete(walenv: WalEnv) -> None:
    w = walenv
    stream = w.start_stream()
    w.insert(20)
    backup(w)
    w.insert(5)
    before = ids(w.conninfo)
    xid = _delete_in_one_transaction(w, 10)
    after = ids(w.conninfo)
    w.insert(5)
    wait_streamed(w)

    exclusive = restore(w, "--target-xid", xid, "--exclusive")
    assert ids(exclusive["url"]) == before
    assert exclusive["target"] == f"just before xid {xid}"
    stop_restored(w, exclusive)

    inclusive = restore(w, "--target-xid", xid)
    assert ids(inclusive["url"]) == after
    stop_restored(w, inclusive)
    w.stop_stream(stream)

    lonely = w.cli("restore", "--latest", "--exclusive", "--new-cluster")
    assert lonely.code == 2 and "--exclusive goes with" in lonely.stderr


def _wal_objects(w: WalEnv) -> list[Path]:
    return sorted(p for p in (w.repo / "wal").glob("0*/*") if p.is_file())


@pytest.mark.slow
@pytest.mark.parametrize("streamer", ["stopped", "frozen"])
def test_latest_after_a_backup_the_streamer_did_not_see_end(walenv: WalEnv, streamer: str) -> None:
    """The repository's WAL ends before a backup does: the streamer stopped before it
    (nothing of the backup's WAL uploaded), or froze mid-segment (a partial of the backup's
    segment that ends before the backup does). ``restore --latest`` recovers with the backup's
    own copy of its WAL and says so, instead of refusing ("a gap") or replaying the
    zero-padded partial and ending before the backup is consistent ("WAL ends before end of
    online backup": what the agent's restore test hit right after a backup)."""
    w = walenv
    stream = w.start_stream()
    try:
        w.insert(10)
        wait_streamed(w)
        if streamer == "stopped":
            w.stop_stream(stream)
        else:
            os.kill(stream.pid, signal.SIGSTOP)  # pg_receivewal runs on; nothing is uploaded
        w.insert(10)
        backup_id = backup(w)
        everything = ids(w.conninfo)
        restored = restore(w, "--latest")
    finally:
        if stream.poll() is None:
            os.kill(stream.pid, signal.SIGCONT)
            w.stop_stream(stream)
    try:
        assert restored["backup_id"] == backup_id
        assert ids(restored["url"]) == everything
        assert any("the backup's own" in n for n in restored["notes"]), restored["notes"]
    finally:
        stop_restored(w, restored)


def test_latest_ignores_a_partial_that_ends_before_the_backup(walenv18: WalEnv) -> None:
    """The repository's last WAL is a partial of the backup's own last segment that ends
    before the backup does (the streamer had not uploaded the rest when a restore test ran
    right after the backup): ``restore --latest`` leaves the partial out and recovers with the
    backup's own copy of the segment. Served zero-padded, it ended recovery before the backup
    was consistent ("WAL ends before end of online backup")."""
    w = walenv18
    stream = w.start_stream()
    w.insert(10)
    backup_id = backup(w)
    everything = ids(w.conninfo)
    wait_streamed(w)
    w.stop_stream(stream)
    stop = parse_lsn(json.loads(w.cli("backup", "show", backup_id, "--json").stdout)["stop_lsn"])
    size = 16 * 2**20
    last = segment_of_lsn(stop, size)
    archive = repository_archive(repository_at(str(w.repo), w.cluster.settings))
    name = next(
        p.name[:24] for p in _wal_objects(w) if parse_segment(p.name[:24], size).segno == last
    )
    whole = archive.get(name) if not is_partial(name) else archive.get_partial(name)
    for path in _wal_objects(w):  # the repository ends inside the backup's last segment
        if parse_segment(path.name[:24], size).segno >= last:
            path.unlink()
    archive.push(partial_piece(name, 0), whole[: max(64, (stop % size) // 2)])

    restored = restore(w, "--latest", "--accept-rollback")
    try:
        assert restored["backup_id"] == backup_id
        assert everything <= ids(restored["url"])
        assert any(f"the backup's own copy of {name}" in n for n in restored["notes"]), restored
    finally:
        stop_restored(w, restored)


def test_latest_says_loudly_when_the_repository_lost_its_newest(walenv18: WalEnv) -> None:
    w = walenv18
    stream = w.start_stream()
    w.insert(10)
    first = backup(w)
    at_first = ids(w.conninfo)
    w.pgbench(1)
    second = backup(w)
    w.insert(10)
    wait_streamed(w)
    w.stop_stream(stream)
    # The repository loses its newest backup and the WAL after the first backup's end.
    stop = json.loads(w.cli("backup", "show", first, "--json").stdout)["stop_lsn"]
    keep_until = segment_of_lsn(parse_lsn(stop), 16 * 2**20)
    shutil.rmtree(w.repo / "backups" / second)
    for path in _wal_objects(w):
        if parse_segment(path.name[:24], 16 * 2**20).segno > keep_until:
            path.unlink()

    refused = w.cli("restore", "--latest", "--new-cluster")
    message = " ".join(refused.stderr.split())
    assert refused.code == 1, refused.stdout + refused.stderr
    assert "lost recent data" in message and f"backup {second}" in message
    assert "OLDER than what pgdr recorded" in message and "--accept-rollback" in message
    assert not list((w.cluster.settings.home / "clusters").glob(f"pitr-{first}*"))

    accepted = restore(w, "--latest", "--accept-rollback")
    assert any(n.startswith("ROLLBACK:") for n in accepted["notes"])
    got = ids(accepted["url"])
    assert at_first <= got and len(got) < len(ids(w.conninfo))
    stop_restored(w, accepted)


def test_latest_with_only_a_backup_lost_says_the_wal_still_reaches_the_end(
    walenv18: WalEnv,
) -> None:
    """The newest backup gone, its WAL and all after it kept: the refusal said the restorable
    state was "OLDER than what pgdr recorded", which was false (the WAL still reaches the end,
    from the older backup). It now says so, and restoring anyway brings back every row."""
    w = walenv18
    stream = w.start_stream()
    w.insert(10)
    backup(w)
    w.insert(10)
    second = backup(w)
    w.insert(10)
    everything = ids(w.conninfo)
    wait_streamed(w)
    w.stop_stream(stream)
    shutil.rmtree(w.repo / "backups" / second)

    refused = w.cli("restore", "--latest", "--new-cluster")
    message = " ".join(refused.stderr.split())
    assert refused.code == 1, refused.stdout + refused.stderr
    assert f"backup {second}" in message and "Its WAL still reaches" in message
    assert "OLDER" not in message
    accepted = restore(w, "--latest", "--accept-rollback")
    try:
        assert any(n.startswith("LOST BACKUP:") for n in accepted["notes"]), accepted["notes"]
        assert ids(accepted["url"]) == everything
    finally:
        stop_restored(w, accepted)


@pytest.mark.slow
def test_unreached_xid_and_stale_staging_leave_nothing(walenv18: WalEnv, scratch: Path) -> None:
    w = walenv18
    backup_id = streamed_backup(w)
    clusters = w.cluster.settings.home / "clusters"
    before = set(clusters.iterdir())

    target = scratch / "xid"
    result = w.cli("restore", "--target-xid", "4000000000", "--to", str(target))
    assert result.code == 1, result.stdout + result.stderr
    assert "was reached" in " ".join(result.stderr.split())
    assert not target.exists() and list(scratch.iterdir()) == []
    assert set(clusters.iterdir()) == before  # its pitr-* cluster directory is gone too

    # What a killed restore leaves: staging of a dead process, a half-made cluster.
    dead = subprocess.Popen(["true"])
    dead.wait()
    staging = [scratch / f".r.pgdr-restore-{dead.pid}", scratch / f".r.pgdr-wal-{dead.pid}"]
    for path in staging:
        path.mkdir()
        (path / "PG_VERSION").write_text("18\n")
    half = clusters / "pitr-half-made"
    (half / "data").mkdir(parents=True)
    records = w.cluster.settings.home / "restores"
    records.mkdir(exist_ok=True)
    (records / f"{dead.pid}.json").write_text(
        json.dumps({"pid": dead.pid, "target": str(scratch / "r"), "cluster_dir": str(half)})
    )
    live = scratch / f".r.pgdr-restore-{os.getpid()}"  # a live process's staging: kept
    live.mkdir()
    cleaned = w.cli("cleanup", "--json")
    assert cleaned.code == 0, cleaned.stderr
    removed = set(json.loads(cleaned.stdout)["removed"])
    assert {str(p) for p in [*staging, half]} <= removed
    assert not half.exists() and live.exists() and not any(p.exists() for p in staging)
    live.rmdir()

    # The next restore into the same place removes stale staging by itself.
    (scratch / f".r.pgdr-restore-{dead.pid}").mkdir()
    restored = w.cli("restore", backup_id, "--to", str(scratch / "r"))
    assert restored.code == 0, restored.stderr
    assert sorted(p.name for p in scratch.iterdir()) == ["r"]


def test_restore_as_primary_restarts_the_copy_as_the_new_primary(walenv18: WalEnv) -> None:
    """``restore --latest --new-cluster --as-primary`` (runbook scenario 1, steps 3-4 at once):
    the copy is restarted without the options that keep a copy a copy, with every row."""
    w = walenv18
    streamed_backup(w)
    refused = w.cli("restore", "--latest", "--to", str(w.repo.parent / "r"), "--as-primary")
    assert refused.code == 2 and "add --new-cluster or --start" in refused.stderr
    data = restore(w, "--latest", "--as-primary")
    try:
        primary = data["as_primary"]
        assert sorted(primary["dropped_options"]) == ["archive_mode", "synchronous_standby_names"]
        assert all(s["source"] != "command line" for s in primary["settings"].values())
        with psycopg.connect(data["url"], autocommit=True) as conn:
            row = conn.execute("SELECT count(*), pg_is_in_recovery() FROM txlog").fetchone()
        assert row == (10, False)
    finally:
        stop_restored(w, data)


def test_restore_start_as_primary_prints_what_it_did(walenv18: WalEnv, scratch: Path) -> None:
    """The human form of ``restore ID --to DIR --start --as-primary``: the settings and where
    they come from, then the URL."""
    w = walenv18
    backup_id = backup(w)
    out = w.cli("restore", backup_id, "--to", str(scratch / "copy"), "--start", "--as-primary")
    name = f"restore-{backup_id}"
    try:
        assert out.code == 0, out.stderr
        for text in ("Restarted as the new primary", "archive_mode = ", "URL: postgresql://"):
            assert text in out.stdout, out.stdout
        assert "command line" not in out.stdout
    finally:
        assert w.cli("cluster", "rm", name, "--yes").code == 0


def test_a_record_of_a_removed_segment_leaves_the_window_end_unknown(walenv18: WalEnv) -> None:
    """The streamer's record of the newest moment proven held can name a segment that is no
    longer in the repository (retention removed it before the streamer's next upload replaced
    the record). The window's end is then unknown (``None``) until that next upload: not the
    record's time, nor a backup's stop (its manifest is written after the backup's stop
    position, so commits in between need not be held)."""
    w = walenv18
    streamed_backup(w)
    archive = repository_archive(repository_at(str(w.repo), w.cluster.settings))
    gone = "000000010000000000000000"  # no WAL segment has number 0
    assert not archive.exists(gone) and not archive.has_partial(gone)
    archive.put_state("partial", {"name": f"{gone}.partial", "read_at": time.time(), "bytes": 0})
    window = json.loads(w.cli("wal", "status", "--json").stdout)
    assert window["window_start"] is not None
    assert window["window_end"] is None
    human = w.cli("wal", "status").stdout
    assert "unknown (not proven" in human and "None" not in human
