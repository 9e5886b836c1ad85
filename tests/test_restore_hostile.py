"""A restore never writes outside its target, even for an authentic backup of a hostile server.

The hostile backups are built with the repository's key through pgdr's own writer pieces (the
archive hasher, the chunk sealer, the signed manifest), from the real archive of a real backup
with members appended: a symbolic link out of the data directory followed by a file beneath it.
Both restore paths are tried (chunks in parallel, and ``--check-files``'s streaming extractor).
"""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgdr.backup import Repository
from pgdr.backup.chunks import DamagedBackup, fetch_chunk
from pgdr.backup.manifest import ChunkEntry, FileEntry, Manifest, chunk_key
from pgdr.backup.take import _Hasher, take_backup
from pgdr.cluster import LocalCluster, choose_installation
from pgdr.config import PgdrSettings
from pgdr.crypto import Background, DataKey
from pgdr.crypto.envelope import seal
from pgdr.restore import restore_backup
from pgdr.restore.base import _Files
from pgdr.restore.beneath import Beneath
from pgdr.restore.delta import LATER_DIRS, Later, _remove_extra, _remove_later


@pytest.fixture(scope="module")
def tiny_pg(settings: PgdrSettings) -> Iterator[LocalCluster]:
    cluster = LocalCluster(settings.home / "clusters" / "hostile-src", settings)
    cluster.create(choose_installation(None, 18))
    cluster.start()
    yield cluster
    cluster.destroy()


def _archive(repo: Repository, manifest: Manifest) -> bytes:
    key = manifest.authenticate(repo.master_key, "test")
    return b"".join(fetch_chunk(repo, manifest, key, i) for i in range(len(manifest.chunks)))


def _with_members(
    archive: bytes,
    extra: list[tuple[tarfile.TarInfo, bytes]],
    replace: dict[str, tarfile.TarInfo] | None = None,
) -> bytes:
    """The archive rewritten (same members, same order, ``replace`` swapping headers by name)
    with ``extra`` appended."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as source,
        tarfile.open(fileobj=out, mode="w:", format=tarfile.USTAR_FORMAT) as sink,
    ):
        for member in source:
            if replace and member.name in replace:
                sink.addfile(replace[member.name])
                continue
            data = source.extractfile(member) if member.isfile() else None
            sink.addfile(member, data)
        for info, payload in extra:
            info.size = len(payload) if info.isfile() else 0
            sink.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return out.getvalue()


def _forge(
    repo: Repository,
    template: Manifest,
    archive: bytes,
    backup_id: str,
    files: list[FileEntry] | None = None,
) -> Manifest:
    """Store ``archive`` as an authentic backup, sealed and signed with the repository's key
    (its file list is the archive's own unless ``files`` is given)."""
    hasher = _Hasher(template.chunk_size)
    hasher.feed(archive)
    hasher.close()
    hasher.finish()
    data_key = DataKey.generate()
    size = template.chunk_size
    chunks = []
    for index, start in enumerate(range(0, len(archive), size)):
        plain = archive[start : start + size]
        sealed = seal(data_key, chunk_key(backup_id, index), plain)
        repo.store.put(chunk_key(backup_id, index), sealed)
        chunks.append(ChunkEntry(len(plain), len(sealed), template.object_digest(sealed)))
    forged = dataclasses.replace(
        template,
        id=backup_id,
        chunks=chunks,
        files=hasher.files if files is None else files,
        stream_size=len(archive),
        stored_size=sum(c.stored_size for c in chunks),
    )
    forged.wrapped_key = repo.master_key.wrap(data_key)
    forged.sign_with(data_key)
    repo.store.put(repo.manifest_key(backup_id), forged.to_json())
    return forged


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, b""


def _file(name: str, payload: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = 0o600
    return info, payload


HOSTILE = {
    "absolute-link": lambda out: [_link("pg_evil", str(out)), _file("pg_evil/file", b"pwned")],
    "relative-link": lambda out: [
        _link("pg_evil", "../../" + out.name),
        _file("pg_evil/file", b"pwned"),
    ],
    "tablespace-link-then-file": lambda out: [
        _link("pg_tblspc/99999", str(out)),
        _file("pg_tblspc/99999/file", b"pwned"),
    ],
}


@pytest.mark.parametrize("check_files", [False, True], ids=["chunks", "check-files"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_symlink_member_never_leads_outside(
    tiny_pg: LocalCluster, repo: Repository, scratch: Path, case: str, check_files: bool
) -> None:
    real = take_backup(repo, tiny_pg.conninfo())
    outside = scratch / "outside"
    outside.mkdir()
    target = scratch / "restore" / "data"
    archive = _with_members(_archive(repo, real), HOSTILE[case](outside))
    forged = _forge(repo, real, archive, "20000101T000000Z-full")
    assert forged.authenticate(repo.master_key, "test")  # authentic, yet hostile

    with pytest.raises(DamagedBackup, match="symbolic link"):
        restore_backup(repo, forged.id, target, check_files=check_files)
    assert list(outside.iterdir()) == []
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == []  # staging removed too


def test_member_kind_must_match_the_manifest(
    tiny_pg: LocalCluster, repo: Repository, scratch: Path
) -> None:
    """The streaming extractor checks each member's kind, not just its name, against the
    manifest: an archive whose pg_wal is a link where the manifest lists a directory fails."""
    real = take_backup(repo, tiny_pg.conninfo())
    outside = scratch / "outside"
    outside.mkdir()
    archive = _archive(repo, real)
    swapped = _with_members(archive, [], replace={"pg_wal": _link("pg_wal", str(outside))[0]})
    forged = _forge(repo, real, swapped, "20000101T000001Z-full", files=real.files)
    target = scratch / "r2" / "data"
    with pytest.raises(DamagedBackup, match="not what its manifest records"):
        restore_backup(repo, forged.id, target, check_files=True)
    assert list(outside.iterdir()) == []
    assert not target.exists()


def test_honest_backup_still_restores(
    tiny_pg: LocalCluster, repo: Repository, scratch: Path
) -> None:
    real = take_backup(repo, tiny_pg.conninfo())
    for check_files in (False, True):
        target = scratch / f"ok-{check_files}"
        result = restore_backup(repo, real.id, target, check_files=check_files)
        assert (target / "PG_VERSION").is_file() and result.files > 100


def _entry(path: str, offset: int) -> FileEntry:
    return FileEntry(path=path, kind="file", size=0, mode=0o600, digest=None, offset=offset)


def test_each_file_is_created_once_and_never_over_one_already_there(tmp_path: Path) -> None:
    """The restore's files are created while its chunks are written (a thread of their own, or
    the writer that gets there first), each with ``O_EXCL``: one planted before the restore
    (a hard link to a file elsewhere, say) is never opened, and the restore fails on it, in
    whichever thread asks for it."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    target = tmp_path / "target"
    (target / "base").mkdir(parents=True)
    (target / "base" / "planted").hardlink_to(outside)
    entries = [_entry(f"base/{n}", i) for i, n in enumerate(["a", "planted", "b", "c"])]
    with (
        Beneath(target) as beneath,
        pytest.raises(FileExistsError),
        _Files(beneath, entries, None) as files,
    ):
        files.ensure("base/c")  # a writer ahead of the creating thread
        files.ensure("base/c")  # asked again: already made, not made twice
        with pytest.raises(FileExistsError):
            files.ensure("base/planted")
    assert outside.read_bytes() == b"keep"
    assert (target / "base" / "c").stat().st_size == 0
    with Beneath(target) as beneath, _Files(beneath, [_entry("pg_wal/x", 0)], None):
        pass  # nobody writes it (an empty file): the creating thread makes it
    assert (target / "pg_wal" / "x").is_file()


class _SlowBeneath(Beneath):
    def open(self, path: str, flags: int, mode: int = 0o600, create_parents: bool = False) -> int:
        time.sleep(0.02)
        return super().open(path, flags, mode, create_parents)


def test_an_interrupted_restore_stops_creating_files_before_it_lets_go(tmp_path: Path) -> None:
    """Ctrl-C while the restore waits for the last files to be created: the creating thread is
    stopped and joined before the directory it creates in is closed (and removed)."""
    entries = [_entry(f"f{i}", i) for i in range(200)]
    main = threading.main_thread().ident
    assert main is not None
    with _SlowBeneath(tmp_path) as beneath:
        files = _Files(beneath, entries, None)
        threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt), files:
            pass  # the chunks are written: waiting for the creating thread
    made = len(list(tmp_path.iterdir()))
    time.sleep(0.1)
    assert files.creating.failure is None  # it stopped; it did not run into the closed directory
    assert 0 < made == len(list(tmp_path.iterdir())) < len(entries)


def test_files_removed_meanwhile_go_or_the_delta_says_why(tmp_path: Path) -> None:
    """A delta removes what the backup does not hold while it rewrites the rest; a file gone
    already is no error, but one that became a directory meanwhile stops the delta."""
    (tmp_path / "stray").write_bytes(b"x")
    (tmp_path / "now-a-directory").mkdir()
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        later = Later([(fd, ["stray", "gone", "now-a-directory"])])
        with pytest.raises(IsADirectoryError), Background(_remove_later(later), "test"):
            pass
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["now-a-directory"]


def test_extra_files_of_many_directories_do_not_hold_a_descriptor_each(tmp_path: Path) -> None:
    """The delta kept a descriptor open for every directory holding files the backup does not
    (to remove them in the background): a cluster of over a thousand databases with tables
    made since the backup ran out of descriptors (1,024 by default). Beyond ``LATER_DIRS``
    directories their files are removed at once."""
    expected = {}
    for n in range(LATER_DIRS + 10):
        directory = tmp_path / "base" / str(n)
        directory.mkdir(parents=True)
        (directory / "16384").write_bytes(b"made since the backup")
        expected[f"base/{n}"] = dataclasses.replace(_entry(f"base/{n}", 0), kind="dir")
    expected["base"] = dataclasses.replace(_entry("base", 0), kind="dir")
    later = Later()
    with Beneath(tmp_path) as beneath:
        removed = _remove_extra(beneath, expected, later)
    try:
        assert removed == LATER_DIRS + 10 and len(later) == LATER_DIRS
        _remove_later(later)(lambda: False)
    finally:
        for fd, _names in later:
            os.close(fd)
    assert not list((tmp_path / "base").rglob("16384"))
    assert len(list((tmp_path / "base").iterdir())) == LATER_DIRS + 10
