"""``restore --delta --by-wal``: the pages to rewrite found in the WAL, not by reading every page.

Real servers (PostgreSQL 15 and 18, data checksums on) changed after a backup (rows updated,
inserted and deleted, a table created, truncated and dropped, a vacuum, hint bits set, a database
created), then crashed or stopped, are brought back to the backup by rewriting only the pages the
WAL names; the result is byte for byte a fresh restore of the backup, and the server starts with
the backup's rows. WAL the directory no longer holds comes from the repository; where neither has
it, every page is read and the report says why.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import run_cli
from fixtures.backup import add_rows
from fixtures.wal import WalEnv
from pgdr.cluster import LocalCluster
from pgdr.config import PgdrSettings
from pgdr.restore.start import adopt_restored
from pgdr.restore.walmap import ChangedPages, Control, NoMap, relation_of
from test_backup_parallel import _table_digest, _tree
from test_pitr import backup, wait_streamed

HOOKS = Path(__file__).parent / "fixtures" / "hooks"
BY_WAL = "By the WAL:"
READ_ALL = "Every page was read"


def _prepare(w: WalEnv, keep: str) -> str:
    w.sql(f"ALTER SYSTEM SET wal_keep_size = '{keep}'")  # how much WAL pg_wal keeps
    w.sql("SELECT pg_reload_conf()")
    add_rows(w.conninfo, "accounts", 60000)
    for table in ("cut", "gone"):
        add_rows(w.conninfo, table, 5000)
    w.sql("CREATE TABLE hinted AS SELECT generate_series(1, 20000) AS i")  # hint bits unset
    return _table_digest(w.conninfo, "accounts")


def _change(w: WalEnv) -> None:
    """A small run of work after the backup, touching every kind of change the map follows."""
    w.sql("UPDATE accounts SET note = 'changed' WHERE i %% 100 = 7")
    w.sql("INSERT INTO accounts SELECT g, 'new' FROM generate_series(1, 500) g")
    w.sql("DELETE FROM accounts WHERE i %% 100 = 3")
    w.sql("VACUUM accounts")
    w.sql("SELECT count(*) FROM hinted")  # sets hint bits: logged only because of checksums
    w.sql("CREATE TABLE extra AS SELECT generate_series(1, 1000) AS i")
    w.sql("TRUNCATE cut")
    w.sql("DROP TABLE gone")
    w.sql("CREATE DATABASE made")


def _delta(w: WalEnv, backup_id: str) -> dict[str, Any]:
    result = w.cli(
        "restore", backup_id, "--to", str(w.cluster.data_dir), "--delta", "--by-wal", "--force",
        "--json",
    )  # fmt: skip
    assert result.code == 0, result.stdout + result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _same_as_a_fresh_restore(w: WalEnv, backup_id: str, scratch: Path, expected: str) -> None:
    reference = scratch / "reference"
    result = w.cli("restore", backup_id, "--to", str(reference))
    assert result.code == 0, result.stderr
    assert _tree(w.cluster.data_dir) == _tree(reference)
    w.cluster.start()
    assert _table_digest(w.conninfo, "accounts") == expected
    assert w.sql("SELECT to_regclass('extra'), count(*) FROM gone") == [(None, 5000)]


def test_by_wal_rewrites_only_the_pages_the_wal_names(walenv: WalEnv, scratch: Path) -> None:
    w = walenv
    expected = _prepare(w, "1GB")  # pg_wal keeps the WAL since the backup
    backup_id = backup(w)
    _change(w)
    w.sql("CHECKPOINT")  # every changed page on disk
    w.cluster.kill()  # a crashed primary
    full = w.cli("backup", "show", backup_id, "--json")
    assert full.code == 0, full.stderr
    data = _delta(w, backup_id)
    notes = "\n".join(data["notes"])
    assert BY_WAL in notes and READ_ALL not in notes, notes
    assert "relation files were left unread" in notes
    assert 0 < data["bytes_restored"] < json.loads(full.stdout)["stream_size"] / 4
    _same_as_a_fresh_restore(w, backup_id, scratch, expected)


def test_by_wal_reads_missing_wal_from_the_repository(walenv18: WalEnv, scratch: Path) -> None:
    """Checkpoints after the backup recycled its WAL out of pg_wal: the streamed copies serve."""
    w = walenv18
    expected = _prepare(w, "0")  # pg_wal keeps no more WAL than a checkpoint needs
    w.start_stream()
    wait_streamed(w)
    backup_id = backup(w)
    _change(w)
    for _ in range(2):
        w.sql("SELECT pg_switch_wal()")
        w.sql("CHECKPOINT")
    wait_streamed(w)
    w.cluster.stop()
    w.stop_stream(w.procs[0])
    notes = "\n".join(_delta(w, backup_id)["notes"])
    assert BY_WAL in notes and READ_ALL not in notes, notes
    _same_as_a_fresh_restore(w, backup_id, scratch, expected)


def test_without_the_wal_every_page_is_read(walenv18: WalEnv, scratch: Path) -> None:
    w = walenv18
    expected = _prepare(w, "0")  # pg_wal keeps no more WAL than a checkpoint needs
    backup_id = backup(w)
    _change(w)
    for _ in range(2):
        w.sql("SELECT pg_switch_wal()")
        w.sql("CHECKPOINT")
    w.cluster.stop()
    notes = "\n".join(_delta(w, backup_id)["notes"])
    assert READ_ALL in notes and BY_WAL not in notes, notes
    assert "is in neither its pg_wal nor the repository" in notes
    _same_as_a_fresh_restore(w, backup_id, scratch, expected)


def test_checksums_turned_on_since_the_backup_mean_reading_every_page(
    walenv18: WalEnv, scratch: Path
) -> None:
    """pg_checksums --enable rewrites every page without WAL: the backup's own pg_control says
    it was taken without checksums, so the WAL is not trusted."""
    w = walenv18
    expected = _prepare(w, "1GB")
    tool, data = str(w.cluster.installation.tool("pg_checksums")), str(w.cluster.data_dir)
    w.cluster.stop()
    assert w.cluster.user.run([tool, "--disable", "-D", data]).returncode == 0
    w.cluster.start()
    backup_id = backup(w)
    w.cluster.stop()
    assert w.cluster.user.run([tool, "--enable", "-D", data]).returncode == 0
    notes = "\n".join(_delta(w, backup_id)["notes"])
    assert READ_ALL in notes and "taken without data checksums" in notes, notes
    _same_as_a_fresh_restore(w, backup_id, scratch, expected)


def test_a_copy_that_went_its_own_way_is_read_in_full(
    walenv18: WalEnv, scratch: Path, settings: PgdrSettings
) -> None:
    """A copy restored from an earlier backup ran on by itself: its WAL is another history,
    which says nothing of the pages the original changed before the later backup."""
    w = walenv18
    _prepare(w, "1GB")
    first = backup(w)
    copy = scratch / "copy"
    assert w.cli("restore", first, "--to", str(copy)).code == 0
    w.sql("UPDATE accounts SET note = 'original' WHERE i %% 50 = 1")
    expected = _table_digest(w.conninfo, "accounts")
    second = backup(w)
    cluster = adopt_restored(settings, copy, 18, scratch / "copy-cluster")
    cluster.start()
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("UPDATE accounts SET note = 'copy' WHERE i % 70 = 2")
        conn.execute("CHECKPOINT")
    cluster.kill()
    result = w.cli(
        "restore", second, "--to", str(copy), "--delta", "--by-wal", "--force", "--json"
    )  # fmt: skip
    assert result.code == 0, result.stdout + result.stderr
    notes = "\n".join(json.loads(result.stdout)["notes"])
    assert READ_ALL in notes and BY_WAL not in notes, notes
    reference = scratch / "reference"
    assert w.cli("restore", second, "--to", str(reference)).code == 0
    assert _tree(copy) == _tree(reference)
    cluster.start()
    try:
        assert _table_digest(cluster.conninfo(), "accounts") == expected
    finally:
        cluster.stop()


def _delta_matches(w: WalEnv, backup_id: str, target: Path, scratch: Path) -> str:
    """The delta by the WAL of ``target``, which must then be byte for byte a fresh restore;
    returns its notes."""
    result = w.cli(
        "restore", backup_id, "--to", str(target), "--delta", "--by-wal", "--force", "--json"
    )  # fmt: skip
    assert result.code == 0, result.stdout + result.stderr
    reference = scratch / "reference"
    assert w.cli("restore", backup_id, "--to", str(reference)).code == 0
    assert _tree(target) == _tree(reference)
    return "\n".join(json.loads(result.stdout)["notes"])


def test_checksums_off_and_on_again_since_the_backup(walenv18: WalEnv, scratch: Path) -> None:
    """(Found by a hostile review.) A transaction open across the backup commits after it;
    checksums are turned off, a scan sets its hint bits without WAL, and they are turned on
    again (pg_checksums rewrites every page without WAL). Both ends have checksums; the files
    written after the backup with no page named give it away. Trusting the WAL made the
    never-committed rows visible."""
    w = walenv18
    _prepare(w, "1GB")
    w.sql("CREATE TABLE t (i int, note text)")
    w.sql("INSERT INTO t SELECT g, 'base' FROM generate_series(1, 100) g")
    with psycopg.connect(w.conninfo) as conn:  # one transaction open across the backup
        conn.execute("INSERT INTO t SELECT g, 'open' FROM generate_series(1, 10) g")
        backup_id = backup(w)
        conn.commit()
    tool, data = str(w.cluster.installation.tool("pg_checksums")), str(w.cluster.data_dir)
    w.cluster.stop()
    assert w.cluster.user.run([tool, "--disable", "-D", data]).returncode == 0
    w.cluster.start()
    assert w.sql("SELECT count(*) FROM t") == [(110,)]  # hint bits, without WAL
    w.sql("CHECKPOINT")
    w.cluster.stop()
    assert w.cluster.user.run([tool, "--enable", "-D", data]).returncode == 0
    notes = _delta_matches(w, backup_id, w.cluster.data_dir, scratch)
    assert READ_ALL in notes and "written outside the WAL" in notes, notes
    w.cluster.start()
    assert w.sql("SELECT count(*) FROM t") == [(100,)]  # the open transaction never committed


def test_unlogged_tables_are_compared(walenv: WalEnv, scratch: Path) -> None:
    """(Found by a hostile review.) A files backup keeps an unlogged table's main fork, which
    no WAL record names: it is compared, not trusted unchanged."""
    w = walenv
    _prepare(w, "1GB")
    w.sql(
        "CREATE UNLOGGED TABLE u AS SELECT g AS i, md5(g::text) AS note FROM generate_series(1, 20000) g"
    )
    w.sql("CREATE INDEX u_i ON u (i)")
    backup_id = backup(w)
    w.sql("UPDATE u SET note = 'x' WHERE i %% 10 = 1")
    w.cluster.stop()
    notes = _delta_matches(w, backup_id, w.cluster.data_dir, scratch)
    assert BY_WAL in notes, notes


def _standby_of(
    w: WalEnv, backup_id: str, copy: Path, settings: PgdrSettings, config: str = ""
) -> LocalCluster:
    """Backup ``backup_id`` restored into ``copy``, adopted and set up as a standby of ``w``'s
    server (with ``config`` added), not started."""
    assert w.cli("restore", backup_id, "--to", str(copy)).code == 0
    cluster = adopt_restored(settings, copy, 18, copy.with_name(copy.name + "-cluster"))
    with (copy / "postgresql.auto.conf").open("a") as conf:
        conf.write(f"primary_conninfo = '{w.conninfo}'\n{config}")
    (copy / "standby.signal").touch()
    return cluster


def test_a_standby_promoted_after_its_last_checkpoint(
    walenv18: WalEnv, scratch: Path, settings: PgdrSettings
) -> None:
    """(Found by a hostile review.) A copy runs as a standby, is promoted, changes rows and
    crashes before the checkpoint that follows promotion: its pg_control still names timeline
    1, whose WAL (the original's, in the repository) knows nothing of the copy's changes."""
    w = walenv18
    _prepare(w, "1GB")
    w.start_stream()
    wait_streamed(w)
    backup_id = backup(w)
    copy = scratch / "copy"
    archiving = "archive_mode = on\narchive_command = '/bin/true'\ncheckpoint_timeout = '1h'\n"
    cluster = _standby_of(w, backup_id, copy, settings, archiving)
    cluster.drop_server_options(["archive_mode"])
    cluster.start()
    try:
        w.sql("UPDATE accounts SET note = 'primary'")
        lsn = w.sql("SELECT pg_current_wal_lsn()")[0][0]
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            for _ in range(300):
                row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s", (lsn,)).fetchone()
                if row and row[0]:
                    break
                time.sleep(0.1)
            conn.execute("SELECT pg_promote(true)")
            conn.execute("UPDATE cut SET note = 'copy' WHERE i % 50 = 3")
            conn.execute("CREATE EXTENSION pg_buffercache")
            conn.execute("SELECT pg_buffercache_evict(bufferid) FROM pg_buffercache WHERE isdirty")
    finally:
        cluster.kill()
    w.sql("UPDATE accounts SET note = 'later' WHERE i %% 1000 = 1")  # the original writes on
    w.sql("SELECT pg_switch_wal()")
    wait_streamed(w)
    w.stop_stream(w.procs[0])
    notes = _delta_matches(w, backup_id, copy, scratch)
    assert READ_ALL in notes and "changed timeline" in notes, notes


def test_a_copy_behind_the_backup_reads_on_in_the_repository(
    walenv18: WalEnv, scratch: Path
) -> None:
    """A directory behind the backup (a copy of the stopped primary, as a lagging replica is):
    its own WAL ends inside a segment the repository holds further; the two agree as far as
    both go, and the repository's copy carries the map on to the backup's end."""
    w = walenv18
    _prepare(w, "1GB")
    w.start_stream()
    wait_streamed(w)
    w.cluster.stop()
    behind = scratch / "behind"
    subprocess.run(["cp", "-a", str(w.cluster.data_dir), str(behind)], check=True)
    w.cluster.start()
    w.sql("UPDATE accounts SET note = 'after the copy' WHERE i %% 40 = 5")
    backup_id = backup(w)
    w.sql("UPDATE accounts SET note = 'after the backup' WHERE i %% 40 = 6")
    w.sql("SELECT pg_switch_wal()")
    wait_streamed(w)
    w.stop_stream(w.procs[0])
    notes = _delta_matches(w, backup_id, behind, scratch)
    assert BY_WAL in notes, notes


def test_an_unstarted_restore_is_read_from_its_backup_label(
    walenv18: WalEnv, scratch: Path
) -> None:
    """(Found by a hostile review.) A checkpoint completes while a backup is copied, so its
    pg_control (copied last) names a redo after the backup's start. A restore of it not yet
    started, brought to a later backup by the WAL, must be read from its backup_label's start:
    a page copied before a change made before that checkpoint is stale in it."""
    w = walenv18
    _prepare(w, "1GB")
    w.sql("CREATE TABLE victim AS SELECT g AS i, 'before' AS note FROM generate_series(1, 1000) g")
    w.sql("CHECKPOINT")
    w.start_stream()
    wait_streamed(w)
    during = "UPDATE victim SET note = 'during' WHERE i <= 10; CHECKPOINT"
    env = w.env | {"PYTHONPATH": str(HOOKS), "PGDR_TEST_SQL_BEFORE_CONTROL": during}
    first = run_cli("backup", "--workers", "1", "--json", env=env)
    assert first.code == 0, first.stderr
    copy = scratch / "copy"
    assert w.cli("restore", json.loads(first.stdout)["id"], "--to", str(copy)).code == 0
    time.sleep(1.1)  # the copy's files were written before the next backup ended
    w.sql("UPDATE accounts SET note = 'between' WHERE i %% 100 = 9")
    second = backup(w)
    w.sql("SELECT pg_switch_wal()")
    wait_streamed(w)
    notes = _delta_matches(w, second, copy, scratch)
    assert BY_WAL in notes, notes


def test_a_logical_message_cannot_pass_for_a_record(
    walenv18: WalEnv, scratch: Path, settings: PgdrSettings
) -> None:
    """(Found by a hostile review.) A copy went its own way; on it, a role with no privilege
    emits a logical message whose prefix, printed by pg_waldump as it is, reads as the later
    backup's BACKUP_END record: the one-history guard was forged from plain SQL. Records of
    managers that name no page (logical messages, transactions) are no longer listed."""
    w = walenv18
    _prepare(w, "1GB")
    first = backup(w)
    copy = scratch / "copy"
    assert w.cli("restore", first, "--to", str(copy)).code == 0
    cluster = adopt_restored(settings, copy, 18, scratch / "copy-cluster")
    cluster.start()
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # the copy's recovery written before the second backup
    time.sleep(1.1)
    w.sql("UPDATE accounts SET note = 'original' WHERE i %% 50 = 1")
    second = backup(w)
    start = json.loads(w.cli("backup", "show", second, "--json").stdout)["start_lsn"]
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        for _ in range(2):  # the copy's own WAL passes the second backup's start
            conn.execute("SELECT pg_switch_wal()")
        conn.execute("CREATE ROLE nobody LOGIN")
        conn.execute("UPDATE accounts SET note = 'copy' WHERE i = 2")
    with psycopg.connect(cluster.conninfo(), user="nobody", autocommit=True) as conn:
        forged = f"\ndesc: BACKUP_END {start}"
        conn.execute("SELECT pg_logical_emit_message(false, %s, '')", (forged,))
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")
    cluster.kill()
    notes = _delta_matches(w, second, copy, scratch)
    assert READ_ALL in notes, notes


def test_a_standby_is_read_in_full(walenv18: WalEnv, scratch: Path, settings: PgdrSettings) -> None:
    """(Found by a hostile review.) On a hot standby, a hint bit set on a page that replay left
    dirty reaches the disk with it, without WAL (checksums on throughout): a standby is
    refused, whether it runs, was stopped or crashed."""
    w = walenv18
    _prepare(w, "1GB")
    w.start_stream()
    wait_streamed(w)
    copy = scratch / "standby"
    cluster = _standby_of(w, backup(w), copy, settings)
    cluster.start()
    w.sql("UPDATE accounts SET note = 'primary' WHERE i %% 30 = 1")
    second = backup(w)
    cluster.kill()
    notes = _delta_matches(w, second, copy, scratch)
    assert READ_ALL in notes and "is a standby" in notes, notes


def test_the_map_follows_what_the_wal_says() -> None:
    """pg_waldump lines (PostgreSQL 15 and 18 forms) folded into pages per file."""
    changes = ChangedPages(start=0, segment_blocks=131072)
    changes.feed(  # in LSN order, as pg_waldump lists them
        [
            "rmgr: Storage     len (rec/tot):     42/    42, tx:        753, lsn: 0/016EF800, "
            "prev 0/016EF7D0, desc: CREATE base/5/16390",
            "rmgr: Heap        len (rec/tot):     61/    61, tx:        754, lsn: 0/0171D9C8, "
            "prev 0/016EF800, desc: INSERT off: 87, flags: 0x00, blkref #0: rel 1663/5/16384 "
            "blk 131073, blkref #1: rel 1663/5/16384 fork vm blk 0",
            "rmgr: Heap        len (rec/tot):     54/  1958, tx:        725, lsn: 0/01741960, "
            "prev 0/0171D9C8, desc: INSERT off 10 flags 0x01, blkref #0: rel 1663/5/1247 blk 14 "
            "FPW",
            "rmgr: Database    len (rec/tot):     34/    34, tx:        759, lsn: 0/01742110, "
            "prev 0/01741960, desc: CREATE_WAL_LOG create dir 1663/16393",
        ]
    )
    changes.count(  # pg_waldump --stats: the records' number and end
        "WAL statistics between 0/016EF800 and 0/01742138:\n"
        "Type                                           N      (%)          Record size ...\n"
        "----                                           -      ---          ----------- ...\n"
        "Heap                                           2 ( 50.00)                 2019 ...\n"
        "                                        --------                      -------- ...\n"
        "Total                                          4                          2095 ...\n"
    )
    assert changes.records == 4 and changes.end == 0x01742138
    with pytest.raises(NoMap, match="2 records of resource manager pgroonga"):  # an extension's
        changes.count("WAL statistics between 0/1 and 0/2:\npgroonga      2 (  1.00)   84\n")
    assert changes.pages_of("base/5/16384") == []
    assert changes.pages_of("base/5/16384.1") == [1]
    assert changes.pages_of("base/5/1247") == [14]
    assert changes.pages_of("base/5/2619") == []  # named by no record: unchanged
    assert changes.pages_of("base/5/16384_vm") is None  # other forks are compared
    assert changes.pages_of("base/5/16390") is None  # created in the window
    assert changes.pages_of("base/16393/1259") is None  # its database was created in the window
    assert changes.pages_of("pg_xact/0000") is None
    assert relation_of("global/1262") == ((1664, 0, 1262), 0)
    assert relation_of("pg_tblspc/16400/PG_18_202506291/5/16401.2") == ((16400, 5, 16401), 2)
    control = Control.parse(
        "Database system identifier:           7441\n"
        "Latest checkpoint's TimeLineID:       3\n"
        "Latest checkpoint's REDO location:    0/2000028\n"
        "Latest checkpoint location:           0/2000080\n"
        "Minimum recovery ending location:     0/0\n"
        "Data page checksum version:           1\n"
        "Database block size:                  8192\n"
        "Blocks per segment of large relation: 131072\n"
        "Bytes per WAL segment:                16777216\n"
        "wal_level setting:                    replica\n"
        "Database cluster state:               in production\n"
    )
    assert (control.timeline, control.redo, control.checksums) == (3, 0x2000028, True)
