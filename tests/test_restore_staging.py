"""A restore killed while --force swaps directories never costs the previous data directory."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from pgdr.config import PgdrSettings
from pgdr.restore.staging import (
    RECORDS,
    _running,
    claimed,
    cleanup,
    remove_stale,
    restore_record,
)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_replaced_directory_goes_back_when_its_target_is_missing(tmp_path: Path) -> None:
    pid = _dead_pid()
    aside = tmp_path / f".data.pgdr-replaced-{pid}"
    aside.mkdir()
    (aside / "PG_VERSION").write_text("18\n")
    new = tmp_path / f".data.pgdr-restore-{pid}"
    new.mkdir()

    removed = remove_stale(tmp_path)

    assert (tmp_path / "data" / "PG_VERSION").read_text() == "18\n"  # put back, not removed
    assert removed == [new]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_replaced_directory_is_removed_once_the_new_one_is_in_place(tmp_path: Path) -> None:
    pid = _dead_pid()
    (tmp_path / "data").mkdir()
    aside = tmp_path / f".data.pgdr-replaced-{pid}"
    aside.mkdir()

    assert remove_stale(tmp_path) == [aside]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_claimed_staging_is_left_alone_whatever_its_process_id(tmp_path: Path) -> None:
    """A restore in another PID namespace (a container sharing the directory) had its staging
    removed by `cleanup` or by another restore there while it ran: its process id meant
    nothing, or this very process, on the other side. A staging is now held with an flock
    while it is written, and one that is held is never stale."""
    target = tmp_path / "data"
    elsewhere = tmp_path / ".data.pgdr-restore-4194303-rdeadbeef"  # a pid no process has
    with claimed(elsewhere):
        (elsewhere / "PG_VERSION").write_text("18\n")
        assert remove_stale(tmp_path) == []
        assert (elsewhere / "PG_VERSION").is_file()
    assert remove_stale(tmp_path) == [elsewhere]  # once let go, it is a dead one's
    assert not target.exists()


def test_each_restore_block_has_its_own_record_held_while_it_runs(tmp_path: Path) -> None:
    """A point-in-time restore records the cluster it makes; the base restore inside it wrote
    the same file (one per process), dropped that cluster from it and removed it when done: a
    killed point-in-time restore's running cluster was "nothing left over". And a record
    whose process id a live process had taken again was "still running" for ever."""
    settings = PgdrSettings(home=tmp_path / "home")
    records = settings.home / RECORDS
    cluster_dir = tmp_path / "pitr-cluster"
    cluster_dir.mkdir()
    with restore_record(settings, tmp_path / "data", cluster_dir):
        with restore_record(settings, tmp_path / "data"):
            assert len(list(records.glob("*.json"))) == 2
        [outer] = list(records.glob("*.json"))
        assert json.loads(outer.read_text())["cluster_dir"] == str(cluster_dir)
        assert cleanup(settings).running == [os.getpid()]  # held: running
        assert cluster_dir.is_dir()
    # a dead restore whose process id is alive again (this test's own): the lock decides
    (records / "1-rdead.json").write_text(
        json.dumps({"pid": os.getpid(), "target": str(tmp_path / "data"), "locked": True,
                    "cluster_dir": str(cluster_dir)})
    )  # fmt: skip
    report = cleanup(settings)
    assert report.running == [] and str(cluster_dir) in report.removed
    assert not cluster_dir.exists()


def test_a_record_gone_meanwhile_is_a_finished_restore(tmp_path: Path) -> None:
    """A review of the lock: `cleanup` read a record, the restore ended (record removed, lock
    let go), and the record that could no longer be opened counted as a dead restore's: its
    finished cluster was stopped and removed."""
    record = tmp_path / "1-rgone.json"
    assert _running(record, {"pid": 1, "locked": True})  # gone: ended on its own
    record.write_text("{}")
    assert not _running(record, {"pid": 1, "locked": True})  # there, held by no one: dead
