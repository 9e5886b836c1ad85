"""A hostile review of the newest restore code: files created while the chunks are written
(``restore.base._Files``), the delta restore's background removal and pg_control last.

Each test states what went wrong before its fix. Real backups of a small PostgreSQL 18 server;
the races of a hostile process writing in the restore's directory are played at the exact
moment they would have to win (a patched step), so that they are tested every time.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, run_cli
from pgdr.backup import Repository
from pgdr.backup.manifest import Manifest
from pgdr.backup.take import take_backup
from pgdr.cluster import LocalCluster, choose_installation
from pgdr.config import PgdrSettings
from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.restore import base as restore_module
from pgdr.restore import restore_backup
from pgdr.restore.base import _Files
from pgdr.restore.delta import delta_restore
from test_restore_failures import tmpfs


@pytest.fixture(scope="module")
def review_pg(settings: PgdrSettings) -> Iterator[LocalCluster]:
    cluster = LocalCluster(settings.home / "clusters" / "restore-review", settings)
    cluster.create(choose_installation(None, 18))
    cluster.start()
    yield cluster
    cluster.destroy()


def _kinds(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry's type and permission bits, owner and group (the root's as ``.``)."""
    found = {".": root.lstat()}
    found |= {p.relative_to(root).as_posix(): p.lstat() for p in root.rglob("*")}
    return {name: (info.st_mode, info.st_uid, info.st_gid) for name, info in found.items()}


def _contents(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def _restored_pair(
    repo: Repository, cluster: LocalCluster, scratch: Path
) -> tuple[Manifest, Path, Path]:
    manifest = take_backup(repo, cluster.conninfo(), method="files")
    data, reference = scratch / "data", scratch / "reference"
    restore_backup(repo, manifest.id, data)
    restore_backup(repo, manifest.id, reference)
    return manifest, data, reference


def test_delta_gives_back_the_owner_and_modes_of_a_restore(
    review_pg: LocalCluster, repo: Repository, scratch: Path
) -> None:
    """A delta restore must leave what a full restore leaves: the directory 0700, every file
    0600, all owned by the service user. Before, files whose bytes matched were left as they
    were (here: PG_VERSION owned by root, postgresql.conf world-writable) and the directory
    itself kept mode 0755: the delta reported success on a directory PostgreSQL refuses to
    start on ("data directory has invalid permissions", PG_VERSION unreadable)."""
    manifest, data, reference = _restored_pair(repo, review_pg, scratch)
    data.chmod(0o755)
    os.chown(data / "PG_VERSION", 0, 0)
    (data / "postgresql.conf").chmod(0o666)
    (data / "global").chmod(0o777)
    os.chown(data / "base", 0, 0)

    delta_restore(repo, manifest.id, data, force=True)

    assert _contents(data) == _contents(reference)
    assert _kinds(data) == _kinds(reference)


def test_a_pg_control_directory_is_no_lasting_obstacle(
    review_pg: LocalCluster, repo: Repository, scratch: Path
) -> None:
    """A directory where pg_control belongs: the delta removes what is in the way of the
    backup's files. Before, removing pg_control first failed on it (EISDIR) and every run
    stopped with "run it again to finish it", which could never finish it."""
    manifest, data, reference = _restored_pair(repo, review_pg, scratch)
    (data / "global" / "pg_control").unlink()
    (data / "global" / "pg_control").mkdir()
    (data / "global" / "pg_control" / "inside").write_bytes(b"x")

    delta_restore(repo, manifest.id, data, force=True)

    assert _contents(data) == _contents(reference)


def _swap_after_creation(
    monkeypatch: pytest.MonkeyPatch, victim: str, swap: object
) -> threading.Event:
    """After ``_Files`` creates ``victim`` (and before a writer opens it), ``swap(path)``: what a
    process writing in the staging directory at the worst moment does."""
    created = _Files._create
    done = threading.Event()

    def create(self: _Files, path: str) -> None:
        created(self, path)
        if path == victim:
            swap(self.beneath.root / path)  # type: ignore[operator]
            done.set()

    monkeypatch.setattr(_Files, "_create", create)
    return done


def test_a_file_swapped_for_a_hard_link_is_never_written_through(
    review_pg: LocalCluster,
    repo: Repository,
    scratch: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between a file's creation (O_EXCL, then closed) and a chunk writer's open of it, a hard
    link to a file outside the target takes its place. Before, the writer opened it by name
    and wrote the backup's bytes into the outside file, and the restore reported success (the
    digests are computed from the bytes written, the size check found the right size)."""
    manifest = take_backup(repo, review_pg.conninfo(), method="files")
    outside = scratch / "outside"
    outside.write_bytes(b"15\n")  # as long as the backup's PG_VERSION

    def swap(path: Path) -> None:
        path.unlink()
        os.link(outside, path)

    done = _swap_after_creation(monkeypatch, "PG_VERSION", swap)
    target = scratch / "restored"
    with pytest.raises(RuntimeFailure, match="PG_VERSION"):
        restore_backup(repo, manifest.id, target, workers=2)
    assert done.is_set()
    assert outside.read_bytes() == b"15\n"
    assert not target.exists()


def test_a_file_swapped_for_a_fifo_fails_the_restore_instead_of_hanging_it(
    review_pg: LocalCluster,
    repo: Repository,
    scratch: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same race with a FIFO: before, the writer's open(O_WRONLY) waited for a reader
    forever, and the restore hung (here released after 60 s by the test)."""
    manifest = take_backup(repo, review_pg.conninfo(), method="files")
    fifo: list[Path] = []

    def swap(path: Path) -> None:
        path.unlink()
        os.mkfifo(path)
        fifo.append(path)

    _swap_after_creation(monkeypatch, "PG_VERSION", swap)
    target = scratch / "restored"
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            restore_backup(repo, manifest.id, target, workers=2)
            outcome.append(None)
        except BaseException as exc:  # reported by the test's own thread
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():  # release the writer stuck on the FIFO, then fail
        reader = os.open(fifo[0], os.O_RDONLY | os.O_NONBLOCK)
        thread.join(60)
        os.close(reader)
        pytest.fail("the restore hung on a FIFO swapped in for one of its files")
    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeFailure), outcome
    assert "PG_VERSION" in str(outcome[0])
    assert not target.exists()
    assert stat.S_ISDIR(scratch.lstat().st_mode)


def _one_sentence(result: CliResult, code: int, *fragments: str) -> None:
    assert result.code == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    message = " ".join(result.stderr[result.stderr.index("error:") :].split())
    for fragment in fragments:
        assert fragment in message, message


def test_a_delta_onto_a_damaged_pg_version_is_refused_in_one_sentence(
    review_pg: LocalCluster, repo: Repository, scratch: Path, backup_env: dict[str, str]
) -> None:
    """A failed primary's PG_VERSION damaged (bytes that are no text): before, the delta's
    check read it as UTF-8 and the command ended in a traceback with exit 1 (a check failed),
    not one sentence and exit 2."""
    manifest, data, _reference = _restored_pair(repo, review_pg, scratch)
    (data / "PG_VERSION").write_bytes(b"\xff\xfe1\x00\n")
    before = _contents(data)
    result = run_cli(
        "restore", manifest.id, "--to", str(data), "--delta", "--force", env=backup_env
    )
    _one_sentence(result, 2, "PG_VERSION", "restore without --delta")
    assert _contents(data) == before


def test_a_delta_never_removes_what_is_mounted_inside_its_target(
    review_pg: LocalCluster, repo: Repository, scratch: Path
) -> None:
    """A file system mounted in the data directory where the backup holds no directory.
    Before: a WAL archive mounted beside the data lost its segments (the sweep's rmtree went
    into it), then every run stopped on the mount point itself ("run it again to finish it");
    a file mounted over postgresql.conf was rewritten in place (the host's file, not the
    target's) and the delta reported success. Both are refused now, before anything changes;
    a directory the backup holds, mounted (pg_wal on a disk of its own), is restored as
    before."""
    manifest, data, reference = _restored_pair(repo, review_pg, scratch)
    (data / "wal_archive").mkdir()
    with tmpfs(data / "wal_archive", "size=16m") as archive:
        (archive / "000000010000000000000001").write_bytes(b"archived")
        with pytest.raises(ConfigError, match="wal_archive"):
            delta_restore(repo, manifest.id, data, force=True)
        assert (archive / "000000010000000000000001").read_bytes() == b"archived"
    assert (data / "global" / "pg_control").is_file()  # nothing changed
    (data / "wal_archive").rmdir()
    conf = scratch / "postgresql.conf"
    conf.write_bytes(b"# the host's own configuration\n")
    subprocess.run(["mount", "--bind", str(conf), str(data / "postgresql.conf")], check=True)
    try:
        with pytest.raises(ConfigError, match=r"postgresql\.conf"):
            delta_restore(repo, manifest.id, data, force=True)
    finally:
        subprocess.run(["umount", str(data / "postgresql.conf")], check=True)
    assert conf.read_bytes() == b"# the host's own configuration\n"

    with tmpfs(data / "pg_wal", "size=256m"):
        delta_restore(repo, manifest.id, data, force=True)
        assert _contents(data) == _contents(reference)


def test_a_forced_restore_never_removes_what_is_mounted_inside_its_target(
    review_pg: LocalCluster, repo: Repository, scratch: Path
) -> None:
    """``--force`` replaces a data directory: the old one is renamed aside and removed. A
    file system mounted in it moved aside with it, and its contents were removed too (here a
    WAL archive's segments, not the data directory's), the mount left behind in the hidden
    aside directory, and the restore reported success. It is refused now, before anything
    changes."""
    manifest, data, _reference = _restored_pair(repo, review_pg, scratch)
    (data / "wal_archive").mkdir()
    with tmpfs(data / "wal_archive", "size=16m") as archive:
        (archive / "000000010000000000000001").write_bytes(b"archived")
        before = _contents(data)
        with pytest.raises(ConfigError, match="wal_archive"):
            restore_backup(repo, manifest.id, data, force=True)
        assert _contents(data) == before
    assert [p.name for p in scratch.iterdir() if p.name.startswith(".")] == []


def test_a_dead_restore_that_had_this_process_id_does_not_block_the_next(
    review_pg: LocalCluster, repo: Repository, scratch: Path
) -> None:
    """Staging is named after the process id, and a staging of this process's own id was
    taken for this process's, never stale. Where process ids repeat (a container's command
    is pid 1 at every start), a restore killed there left a staging that blocked every next
    restore into that place ("File exists") and that neither a restore nor ``pgdr cleanup``,
    with the same pid, would ever remove."""
    manifest = take_backup(repo, review_pg.conninfo(), method="files")
    left = scratch / f".new.pgdr-restore-{os.getpid()}"  # a killed run with this pid left it
    left.mkdir()
    (left / "PG_VERSION").write_text("18\n")

    restore_backup(repo, manifest.id, scratch / "new")

    assert (scratch / "new" / "PG_VERSION").is_file()
    assert sorted(p.name for p in scratch.iterdir()) == ["new"]


def test_check_files_with_a_delta_is_refused_not_ignored(cli_env: dict[str, str]) -> None:
    """`--check-files` was silently ignored by `--delta`: the operator thought every file's
    SHA-256 recomputed by a mode that never looked at the option. Refused before anything."""
    home = Path(cli_env["PGDR_HOME"]) / "never-made"
    args = ("restore", "latest", "--to", str(home / "data"), "--delta", "--force", "--check-files")
    result = run_cli(*args, env=cli_env | {"PGDR_HOME": str(home)})
    assert result.code == 2, result.stderr
    assert "--check-files goes with a full restore" in result.stderr
    assert not home.exists()


def test_a_second_restore_into_a_directory_being_rewritten_is_refused(
    review_pg: LocalCluster, repo: Repository, scratch: Path
) -> None:
    """Nothing stopped two restores writing one directory at once: a delta while another delta
    (or a --force restore) ran wrote the same files, and one could put pg_control back while
    the other was still half-way. The one that comes second is now refused, nothing changed."""
    manifest = take_backup(repo, review_pg.conninfo(), method="files")
    data = scratch / "held"
    restore_backup(repo, manifest.id, data)
    before = _contents(data)
    (data / "PG_VERSION").chmod(0o644)  # would be put back by a delta that ran
    fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running restore holds it
        for run in (
            lambda: delta_restore(repo, manifest.id, data, force=True),
            lambda: restore_backup(repo, manifest.id, data, force=True),
        ):
            with pytest.raises(RuntimeFailure, match="Another restore is writing"):
                run()
            assert _contents(data) == before
            assert stat.S_IMODE((data / "PG_VERSION").stat().st_mode) == 0o644
    finally:
        os.close(fd)
    delta_restore(repo, manifest.id, data, force=True)  # once it ends, the next one runs
    assert stat.S_IMODE((data / "PG_VERSION").stat().st_mode) == 0o600


def test_a_mount_point_as_the_target_is_refused_before_any_work(
    repo: Repository, review_pg: LocalCluster, scratch: Path
) -> None:
    """An empty mount point as --to: the restore wrote the whole backup beside it, on the
    parent's file system (its free space checked there), then failed on renaming over the mount
    point (EBUSY) after all the work. Now refused at once, naming a directory on it instead."""
    manifest = take_backup(repo, review_pg.conninfo(), method="files")
    with tmpfs(scratch / "mounted", "size=256m") as mounted:
        with pytest.raises(ConfigError, match="is a mount point"):
            restore_backup(repo, manifest.id, mounted)
        assert list(mounted.iterdir()) == []
        assert [p.name for p in scratch.iterdir() if "pgdr-" in p.name] == []
        restore_backup(repo, manifest.id, mounted / "data")  # as the sentence says
        assert (mounted / "data" / "PG_VERSION").is_file()


def test_ctrl_c_while_a_forced_restore_puts_itself_in_place_finishes_it(
    review_pg: LocalCluster,
    repo: Repository,
    scratch: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C after ``--force`` had swapped the restored directory in, while the replaced one
    was being removed, said "Interrupted." (exit 130) with the restore in place and what was
    left of the old directory hidden beside it. Now the swap and the removal finish, and the
    restore ends with a note of the interrupt. The Ctrl-C comes as the removal starts."""
    manifest, data, _reference = _restored_pair(repo, review_pg, scratch)
    (data / "old-only").write_text("of the replaced directory")
    rmtree = shutil.rmtree

    def interrupted(path: Path, *args: Any, **kwargs: Any) -> None:
        if ".pgdr-replaced-" in Path(path).name:
            signal.raise_signal(signal.SIGINT)
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", interrupted)
    result = restore_backup(repo, manifest.id, data, force=True)
    monkeypatch.undo()
    assert any("Ctrl-C came" in note for note in result.notes), result.notes
    assert (data / "PG_VERSION").is_file() and not (data / "old-only").exists()
    assert [p.name for p in scratch.iterdir() if p.name.startswith(".")] == []


def test_a_forced_restore_that_cannot_take_the_place_puts_the_old_contents_back(
    review_pg: LocalCluster, repo: Repository, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous contents are renamed aside before the restore takes their place; if that
    second rename failed, the first was not undone: the data directory was gone from its
    path, hidden beside it."""
    manifest, data, _reference = _restored_pair(repo, review_pg, scratch)
    (data / "marker").write_text("old")
    rename = Path.rename

    def failing(self: Path, target: Path) -> Path:
        if ".pgdr-restore-" in self.name:
            raise OSError(5, "Input/output error")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(RuntimeFailure, match="Input/output error"):
        restore_backup(repo, manifest.id, data, force=True)
    monkeypatch.undo()
    assert (data / "marker").read_text() == "old"
    assert [p.name for p in scratch.iterdir() if p.name.startswith(".")] == []


def test_a_killed_forced_restore_is_undone_before_the_next_one_checks_its_target(
    review_pg: LocalCluster, repo: Repository, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `--force` restore killed between its two renames leaves the old contents aside. The
    next restore without --force checked the (missing) target first, wrote the whole backup,
    then met the old contents put back and failed "Directory not empty" (exit 3). The old
    contents now go back first, and it is refused in one sentence before writing anything."""
    manifest, data, _reference = _restored_pair(repo, review_pg, scratch)
    (data / "marker").write_text("old")
    aside = scratch / f".{data.name}.pgdr-replaced-4194303-rdeadbeef"  # a dead restore's
    data.rename(aside)
    written: list[Any] = []
    real = restore_module.lay_down

    def watched(*args: Any, **kwargs: Any) -> Any:
        written.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(restore_module, "lay_down", watched)
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        restore_backup(repo, manifest.id, data)
    assert written == [] and (data / "marker").read_text() == "old" and not aside.exists()
