"""Parallel backups read from the data directory (``--method files``), parallel and delta restores.

Real servers (PostgreSQL 15 and 18): both backup kinds restore, pass ``pg_verifybackup`` and
start with the data; a killed parallel backup or restore leaves nothing listed or half-written
and the next run succeeds; a delta restore rewrites only what differs and is row-exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import Server, run_cli
from fixtures.backup import add_rows, count_rows
from pgdr.backup import Repository
from pgdr.backup.files import Locality, choose_method, locate
from pgdr.backup.take import take_backup
from pgdr.cluster import LocalCluster, choose_installation, installation_for_major
from pgdr.cluster.processes import server_on
from pgdr.config import PgdrSettings
from pgdr.core.errors import ConfigError, PgdrError
from pgdr.restore import restore_backup
from pgdr.restore.delta import PAGE, _pages_differing, delta_restore
from pgdr.restore.start import adopt_restored


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def _table_digest(conninfo: str, table: str) -> str:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT md5(string_agg(t::text, ',' ORDER BY i)) FROM {table} t"
        ).fetchone()
        assert row is not None
        return str(row[0])


@pytest.mark.parametrize("method", ["files", "stream"])
def test_both_methods_restore_verify_and_start(
    server: Server, repo: Repository, scratch: Path, settings: PgdrSettings, method: str
) -> None:
    db = server.new_database()
    add_rows(db, "kept", 3000)
    chosen: list[tuple[str, str]] = []
    manifest = take_backup(
        repo,
        server.cluster.conninfo(),
        method=method,
        workers=2,
        on_method=lambda *a: chosen.append(a),
    )
    assert chosen == [(method, "")]
    assert all(c.size == manifest.chunk_size for c in manifest.chunks[:-1])
    assert all(f.digest for f in manifest.files if f.kind == "file")
    paths = {f.path for f in manifest.files}
    assert {"backup_label", "backup_manifest", "global/pg_control", "PG_VERSION"} <= paths
    assert not {"postmaster.pid", "postmaster.opts"} & paths
    assert any(p.startswith("pg_wal/0000") for p in paths)

    target = scratch / "restored"
    restore_backup(repo, manifest.id, target, check_files=True)
    tool = installation_for_major(manifest.pg_major, settings.pg_bin).tool("pg_verifybackup")
    verified = subprocess.run([str(tool), str(target)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    cluster = adopt_restored(settings, target, manifest.pg_major, scratch / "cluster")
    cluster.start()
    try:
        dbname = str(psycopg.conninfo.conninfo_to_dict(db)["dbname"])
        assert count_rows(cluster.conninfo(dbname), "kept") == 3000
    finally:
        cluster.stop()


def test_auto_falls_back_to_the_stream_with_a_reason(pg18: Server) -> None:
    conninfo = pg18.cluster.conninfo()
    here = locate(conninfo, "1", 18)
    assert here.data_dir is None and "another database system" in here.reason
    assert choose_method("auto", here, False) == (
        "stream",
        f"Streamed with pg_basebackup because {here.reason}.",
    )
    with pytest.raises(ConfigError, match="files backup method cannot be used"):
        choose_method("files", here, False)
    beside = Locality(pg18.cluster.data_dir, "")
    assert choose_method("auto", beside, False) == ("files", "")
    assert choose_method("auto", beside, True)[0] == "stream"  # incremental: pg_basebackup
    assert locate(conninfo, "1", 14).reason.startswith("PostgreSQL 14 has no pg_backup_start")


@pytest.fixture(scope="module")
def busy_pg(settings: PgdrSettings) -> Iterator[LocalCluster]:
    cluster = LocalCluster(settings.home / "clusters" / "backup-parallel", settings)
    cluster.create(choose_installation(None, 18))
    cluster.start()
    add_rows(cluster.conninfo(), "payload", 300000)
    yield cluster
    cluster.destroy()


def _kill_when(
    args: list[str], env: dict[str, str], ready: Callable[[], bool], timeout: float = 120
) -> bool:
    """Run pgdr ``args`` and SIGKILL it as soon as ``ready()`` (its work seen under way);
    whether it was still running then. Progress, not a delay: a faster pgdr finished a small
    backup before a fixed delay had passed, and nothing was killed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgdr", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.001)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return killed


def _chunks_written(repo: Path, count: int) -> Callable[[], bool]:
    """Whether a backup begun from now on has ``count`` chunk objects (or temporary files of
    them) in ``repo`` yet. It begins in a second of its own: a backup's id is its start to the
    second, and one begun in the same second as a killed one would write into its directory."""
    time.sleep(1.01 - time.time() % 1)
    before = set((repo / "backups").glob("*/chunks"))

    def ready() -> bool:
        for directory in (repo / "backups").glob("*/chunks"):
            if directory not in before and len(list(directory.iterdir())) >= count:
                return True
        return False

    return ready


def _staging_after(parent: Path, seconds: float) -> Callable[[], bool]:
    """Whether a restore begun from now on has been writing its staging in ``parent`` for
    ``seconds``."""
    before, seen = set(parent.iterdir()), list[float]()

    def ready() -> bool:
        if not seen and any(".pgdr-restore-" in p.name for p in set(parent.iterdir()) - before):
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= seconds

    return ready


def _backup_sessions(cluster: LocalCluster) -> int:
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgdr_backup_%'"
        ).fetchone()
        assert row is not None
        return int(row[0])


def test_killed_parallel_backup_and_restore(
    busy_pg: LocalCluster, backup_env: dict[str, str], scratch: Path
) -> None:
    env = backup_env | {"DATABASE_URL": busy_pg.conninfo(), "PGDR_BACKUP_METHOD": "files"}
    first = run_cli("backup", "--json", env=env)
    assert first.code == 0, first.stderr
    first_id = json.loads(first.stdout)["id"]
    assert json.loads(first.stdout)["method"] == "files"
    repo = Path(env["PGDR_REPO"])
    killed = sum(_kill_when(["backup"], env, _chunks_written(repo, count)) for count in (0, 1, 2))
    assert killed == 3
    listed = json.loads(run_cli("backup", "list", "--json", env=env).stdout)["backups"]
    assert listed[0]["id"] == first_id
    verify = run_cli("backup", "verify", "--all", env=env)
    assert verify.code == 0, verify.stdout + verify.stderr
    for _ in range(50):  # the server ends the backup and drops the slot with the connection
        if _backup_sessions(busy_pg) == 0:
            break
        time.sleep(0.2)
    assert _backup_sessions(busy_pg) == 0
    after = run_cli("backup", "--json", env=env)
    assert after.code == 0, after.stderr
    info = json.loads(run_cli("repo", "info", "--json", env=env).stdout)
    assert info["incomplete"] == [] and info["lock"] is None

    target = scratch / "r"
    killed = 0
    verify = installation_for_major(18).tool("pg_verifybackup")
    for delay in (0.0, 0.05, 0.15):
        restore = ["restore", first_id, "--to", str(target)]
        killed += _kill_when(restore, env, _staging_after(scratch, delay))
        if target.exists():  # renamed into place only when complete (the kill came later)
            checked = subprocess.run([str(verify), str(target)], capture_output=True, text=True)
            assert checked.returncode == 0, checked.stderr
        shutil.rmtree(target, ignore_errors=True)
    assert killed >= 1
    restored = run_cli("restore", first_id, "--to", str(target), env=env)
    assert restored.code == 0, restored.stderr
    assert (target / "PG_VERSION").is_file()


def _refused_out_of_sight(repo: Repository, backup_id: str, data: Path, scratch: Path) -> Path:
    """A server whose process this machine cannot see (another PID namespace) is found by the
    socket, then the port, its postmaster.pid names; a single-user backend by its negated pid.
    Tried on a copy of the running server's postmaster.pid, in a directory of its own (the
    server rereads its own file every minute and stops if another pid is in it)."""
    lines = (data / "postmaster.pid").read_text().split("\n")
    seen = scratch / "out-of-sight"
    seen.mkdir()
    shutil.copy(data / "PG_VERSION", seen / "PG_VERSION")
    for socket_dir, refusal in (
        (lines[4], r"its socket .*\.s\.PGSQL\.\d+ accepts connections"),
        ("", rf"port {lines[3]} of 127\.0\.0\.1 accepts connections"),
    ):
        (seen / "postmaster.pid").write_text(
            "\n".join(["999999999", *lines[1:4], socket_dir, *lines[5:]])
        )
        with pytest.raises(ConfigError, match=refusal):
            delta_restore(repo, backup_id, seen, force=True)
    (seen / "postmaster.pid").write_text("\n".join([f"-{os.getpid()}", *lines[1:3], "", "", ""]))
    with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):  # postgres --single's form
        delta_restore(repo, backup_id, seen, force=True)
    (seen / "postmaster.pid").write_text("\n".join(["999999999", *lines[1:]]))
    return seen


def test_delta_restore_rewrites_only_what_differs(
    pg18: Server, repo: Repository, scratch: Path, settings: PgdrSettings
) -> None:
    db = pg18.new_database()
    add_rows(db, "accounts", 60000)
    dbname = str(psycopg.conninfo.conninfo_to_dict(db)["dbname"])
    expected = _table_digest(db, "accounts")
    manifest = take_backup(repo, pg18.cluster.conninfo(), method="files")
    data = scratch / "data"
    full = restore_backup(repo, manifest.id, data)

    # A pgbench-like change on the restored copy: 1% of rows updated, rows added, a new table.
    cluster = adopt_restored(settings, data, manifest.pg_major, scratch / "c1")
    cluster.start()
    try:
        with psycopg.connect(cluster.conninfo(dbname), autocommit=True) as conn:
            conn.execute("UPDATE accounts SET note = 'changed' WHERE i % 100 = 7")
            conn.execute("INSERT INTO accounts SELECT g, 'new' FROM generate_series(1, 500) g")
            conn.execute("CREATE TABLE extra AS SELECT generate_series(1, 1000) AS i")
            conn.execute("CHECKPOINT")
        assert _table_digest(cluster.conninfo(dbname), "accounts") != expected
        with pytest.raises(ConfigError, match="is running on"):
            delta_restore(repo, manifest.id, data, force=True)
        out_of_sight = _refused_out_of_sight(repo, manifest.id, data, scratch)
    finally:
        cluster.stop()
    assert server_on(out_of_sight) is None  # its server gone: a stale postmaster.pid
    with pytest.raises(ConfigError, match="pass --force"):
        delta_restore(repo, manifest.id, data)

    result = delta_restore(repo, manifest.id, data, force=True)
    assert 0 < result.bytes_restored < full.bytes_restored / 4
    reference = scratch / "reference"
    restore_backup(repo, manifest.id, reference)
    assert _tree(data) == _tree(reference)  # byte for byte the backup, extras removed

    again = adopt_restored(settings, data, manifest.pg_major, scratch / "c2")
    again.start()
    try:
        assert _table_digest(again.conninfo(dbname), "accounts") == expected
    finally:
        again.stop()


def test_delta_compares_every_window_of_a_piece() -> None:
    """The page comparison finds a change in any of the file's 8 KiB pages, the partial first
    and last ones of a piece too, and gives them as the file's page bounds."""
    size = 5 * PAGE + 100  # a piece need not end on a page
    old = bytearray(random.Random(15).randbytes(size))
    assert _pages_differing(memoryview(old), memoryview(bytes(old)), 0) == []
    new = bytearray(old)
    for at in (0, 3 * PAGE - 1, size - 1):  # first byte, last byte of a page, the tail
        new[at] ^= 0xFF
    found = _pages_differing(memoryview(old), memoryview(new), 0)
    assert found == [(0, PAGE), (2 * PAGE, 3 * PAGE), (5 * PAGE, size)]
    # a piece starting 100 bytes before a page of its file: windows end on the file's pages
    found = _pages_differing(memoryview(old), memoryview(new), PAGE - 100)
    assert found == [(0, 100), (2 * PAGE + 100, 3 * PAGE + 100), (4 * PAGE + 100, size)]


def test_delta_never_writes_outside_its_target(
    pg18: Server, repo: Repository, scratch: Path
) -> None:
    """Links, hard links and a FIFO planted in the directory: the delta replaces them, never
    writes, truncates or deletes through them, and ends byte for byte the backup."""
    manifest = take_backup(repo, pg18.cluster.conninfo(), method="files")
    data, reference = scratch / "data", scratch / "reference"
    restore_backup(repo, manifest.id, data)
    restore_backup(repo, manifest.id, reference)
    outside = scratch / "outside"
    (outside / "dir").mkdir(parents=True)
    victims = {
        "by-link": b"reached through a symbolic link",
        "dangling-target": None,
        "dir/kept": b"in a directory linked from the target",
    }
    for name, content in victims.items():
        if content is not None:
            (outside / name).write_bytes(content)
    # a file replaced by a link to a file outside, another by a link to nowhere (O_CREAT)
    (data / "global" / "pg_filenode.map").unlink()
    (data / "global" / "pg_filenode.map").symlink_to(outside / "by-link")
    (data / "PG_VERSION").rename(data / "PG_VERSION.keep")
    (data / "base" / "1" / "PG_VERSION").unlink()
    (data / "base" / "1" / "PG_VERSION").symlink_to(outside / "dangling-target")
    # a file with a second name outside the target, changed through it
    shared = outside / "hard-link"
    os.link(data / "base" / "1" / "pg_filenode.map", shared)
    shared.write_bytes(b"changed through a hard link")
    # an extra directory that is a link to a directory outside, and a FIFO for a file
    (data / "base" / "99999").symlink_to(outside / "dir")
    (data / "global" / "pg_control").rename(data / "pg_control.old")
    os.mkfifo(data / "global" / "pg_control")
    (data / "PG_VERSION.keep").rename(data / "PG_VERSION")

    delta_restore(repo, manifest.id, data, force=True)

    assert _tree(data) == _tree(reference)
    assert not (data / "base" / "99999").exists()
    for name, content in victims.items():
        assert (outside / name).exists() == (content is not None), name
        if content is not None:
            assert (outside / name).read_bytes() == content, name
    assert shared.read_bytes() == b"changed through a hard link"
    assert (data / "base" / "1" / "pg_filenode.map").stat().st_nlink == 1


def test_a_failed_delta_leaves_nothing_postgres_would_start(
    pg18: Server, repo: Repository, scratch: Path, tmp_path: Path
) -> None:
    """pg_control goes first and comes back last: a delta that fails half-way (here: the
    repository lost its chunks) leaves a directory without it; a second run finishes."""
    manifest = take_backup(repo, pg18.cluster.conninfo(), method="files")
    data, reference = scratch / "data", scratch / "reference"
    restore_backup(repo, manifest.id, data)
    restore_backup(repo, manifest.id, reference)
    for path in (data / "base").rglob("*"):
        if path.is_file() and path.stat().st_size > 8192:
            with path.open("r+b") as handle:
                handle.write(b"\xff" * 64)
    chunks = tmp_path / "repo" / "backups" / manifest.id / "chunks"
    aside = tmp_path / "chunks-aside"
    chunks.rename(aside)
    with pytest.raises(PgdrError):
        delta_restore(repo, manifest.id, data, force=True)
    assert not (data / "global" / "pg_control").exists()
    aside.rename(chunks)
    delta_restore(repo, manifest.id, data, force=True)
    assert _tree(data) == _tree(reference)
