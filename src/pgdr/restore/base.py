"""Restoring a base backup into a new data directory.

Chunks are fetched, checked against the manifest and opened in parallel, and each chunk's bytes
are written straight into the files it holds, whose digests are recomputed from those bytes and
checked against the (authenticated) manifest; with ``check_files`` the archive stream is
instead extracted in order by a streaming tar reader that checks each file as it is written.
Everything lands in a staging directory next to the target, which is renamed into place only
when complete, so a failed restore leaves nothing half-written behind and an existing directory
is never touched without ``force``.

An incremental backup (PostgreSQL 17+) is restored by materialising its chain (full + each
incremental) into temporary directories next to the target, then ``pg_combinebackup`` writes the
synthetic full backup into the staging directory; this needs local disk for the whole chain.

The result is a data directory that reaches consistency by itself (the WAL of the backup is in
``pg_wal``) and starts as a copy of the server at the end of the backup, never as a replica
(a backup taken from a standby loses its ``standby.signal``). Recovery settings for
point-in-time recovery are a separate step that writes into the restored directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from pgdr.backup.chunks import (
    PIECE,
    DamagedBackup,
    fetch_chunk,
    fetch_chunk_pieces,
    read_ahead,
    thread_scratch,
)
from pgdr.backup.digest import PIECES, PieceDigests, piece_hasher
from pgdr.backup.hashing import HashThread
from pgdr.backup.manifest import FileEntry, Manifest
from pgdr.backup.repository import Repository
from pgdr.backup.tarstream import TarMember, TarReader
from pgdr.cluster import installation_for_major
from pgdr.cluster.service_user import ServiceUser, resolve_service_user
from pgdr.core import runner
from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.core.log import logger
from pgdr.crypto import Background, DataKey, parallel_map
from pgdr.restore.beneath import Beneath, check_layout, mounts_below
from pgdr.restore.staging import (
    check_space,
    claimed,
    held,
    remove_stale,
    restore_record,
    staging_dir,
    write_failure,
)

log = logger(__name__)

Progress = Callable[[int], None]


@dataclass
class RestoreResult:
    """What a restore did."""

    backup_id: str
    data_dir: Path
    chain: list[str]
    pg_major: int
    pg_version: str
    bytes_restored: int
    files: int
    duration_s: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "data_dir": str(self.data_dir),
            "chain": self.chain,
            "pg_major": self.pg_major,
            "pg_version": self.pg_version,
            "bytes_restored": self.bytes_restored,
            "files": self.files,
            "duration_s": round(self.duration_s, 3),
            "notes": self.notes,
        }


def backup_chain(repo: Repository, manifest: Manifest) -> list[Manifest]:
    """The backups a restore of ``manifest`` needs, oldest (the full backup) first."""
    chain = [manifest]
    while chain[0].parent is not None:
        parent_id = chain[0].parent
        try:
            chain.insert(0, repo.read_manifest(parent_id))
        except ConfigError:
            raise RuntimeFailure(
                f"Backup {manifest.id} is incremental on {parent_id}, which is missing from "
                f"the repository {repo.name}."
            ) from None
    return chain


class _Extractor(TarReader):
    """Writes the archive into ``root``, checking each file against the manifest."""

    def __init__(self, root: Path, manifest: Manifest, owner: ServiceUser | None) -> None:
        super().__init__()
        check_layout(manifest.files, manifest.id)
        self.root = root
        self.beneath = Beneath(root)
        self.manifest = manifest
        self.expected: dict[str, FileEntry] = {f.path: f for f in manifest.files}
        self.seen: set[str] = set()
        self.owner = owner
        self._fd: int | None = None
        self.mismatched: list[str] = []
        self._hasher = HashThread(self._compare)
        self.bytes_written = 0

    def _compare(self, path: str, digest: str) -> None:
        if digest != self.expected[path].digest:
            self.mismatched.append(path)

    def _ids(self) -> tuple[int, int] | None:
        if self.owner is not None and self.owner.switch:
            return self.owner.uid, self.owner.gid
        return None

    def on_member(self, member: TarMember) -> None:
        entry = self.expected.get(member.path)
        if entry is None or member.path in self.seen:
            raise DamagedBackup(
                f"Backup {self.manifest.id} holds {member.path}, which its manifest does not list."
            )
        if (member.kind, member.linkname if member.kind == "symlink" else "") != (
            entry.kind,
            entry.linkname if entry.kind == "symlink" else "",
        ):
            raise DamagedBackup(
                f"{member.path} in backup {self.manifest.id} is not what its manifest records."
            )
        self.seen.add(member.path)
        ids = self._ids()
        if member.kind == "dir":
            fd = self.beneath.mkdir(member.path)
            if ids:
                os.fchown(fd, *ids)
            os.close(fd)
        elif member.kind == "file":
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            self._fd = self.beneath.open(member.path, flags, create_parents=True)
            if ids:
                os.fchown(self._fd, *ids)
            self._hasher.start(member.path, self.manifest.file_digest(entry))
        elif member.kind == "symlink":
            self.beneath.symlink(member.path, member.linkname, ids)

    def on_data(self, member: TarMember, data: memoryview) -> None:
        if self._fd is not None:
            self._hasher.update(data)
            written = 0
            while written < len(data):
                count = os.write(self._fd, data[written:])
                if count <= 0:
                    raise RuntimeFailure("A write of the restore made no progress.")
                written += count
            self.bytes_written += len(data)

    def on_member_end(self, member: TarMember) -> None:
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        self._hasher.end()
        if member.size != self.expected[member.path].size:
            raise DamagedBackup(
                f"{member.path} in backup {self.manifest.id} does not have its recorded size."
            )

    def finish(self) -> None:
        self.close()
        self.beneath.close()
        self._hasher.close()
        check_digests(self.manifest, self.mismatched)
        missing = [f.path for f in self.manifest.files if f.path not in self.seen]
        if missing:
            raise DamagedBackup(
                f"Backup {self.manifest.id} lacks {len(missing)} file(s) its manifest lists, "
                f"e.g. {missing[0]}."
            )

    def abort(self) -> None:
        self._hasher.abandon()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.beneath.close()


_SYNC_FILE_RANGE_WRITE = 2


def _libc_function(name: str, argtypes: list[Any]) -> Any:
    """A function of the C library (None where it has none), setting ``errno``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = getattr(libc, name)
    except (OSError, AttributeError):
        return None
    func.argtypes = argtypes
    return func


_sync_file_range = _libc_function(
    "sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
)
_syncfs = _libc_function("syncfs", [ctypes.c_int])


def sync_filesystem(directory: Path) -> None:
    """Write everything of the filesystem holding ``directory`` to disk, and fail if the kernel
    could not (``syncfs`` reports write-back errors, as PostgreSQL relies on for
    ``recovery_init_sync_method = syncfs``; plain ``sync()`` reports nothing)."""
    if _syncfs is None:
        os.sync()
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _syncfs(fd) != 0:
            error = ctypes.get_errno()
            raise RuntimeFailure(f"Writing {directory} to disk failed: {os.strerror(error)}.")
    finally:
        os.close(fd)


def fsync_directory(path: Path) -> None:
    """Make the entries of ``path`` durable (a rename into it); a directory this process may
    not open (no read permission) is left to the file system's own commit."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except PermissionError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: memoryview, offset: int) -> int:
    """Write all of ``data`` at ``offset`` (``pwrite`` may write less: a full disk, a quota, a
    network filesystem); returns its length, raises when nothing more can be written."""
    done = 0
    while done < len(data):
        count = os.pwrite(fd, data[done:], offset + done)
        if count <= 0:
            raise RuntimeFailure("A write of the restore made no progress (is the disk full?).")
        done += count
    return done


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now (as PostgreSQL's flush_after does),
    so the final sync has little left to do; a no-op where unsupported."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _end(entry: FileEntry) -> int:
    return entry.offset + entry.size


def _create_dirs(manifest: Manifest, target: Path, owner: ServiceUser | None) -> list[FileEntry]:
    """Directories and symlinks from the manifest; returns the regular files, left for a
    :class:`_Files` to create."""
    check_layout(manifest.files, manifest.id)
    ids = _owner_ids(owner)
    files: list[FileEntry] = []
    with Beneath(target) as beneath:
        for entry in manifest.files:
            if entry.kind == "symlink":
                beneath.symlink(entry.path, entry.linkname, ids)
            elif entry.kind == "dir":
                fd = beneath.mkdir(entry.path)
                try:
                    if ids:
                        os.fchown(fd, *ids)
                finally:
                    os.close(fd)
            else:
                files.append(entry)
    return files


def _owner_ids(owner: ServiceUser | None) -> tuple[int, int] | None:
    return (owner.uid, owner.gid) if owner is not None and owner.switch else None


class _Files:
    """The restore's regular files, each created once (``O_EXCL``) by whichever thread needs it
    first: a thread of its own walks them in archive order while the chunk writers run, and a
    writer that gets ahead of it creates the file it needs itself (or waits for its creator).

    Creating a file is not free: on this project's ext4 VMs, 0.5-0.8 ms of kernel time each,
    serialised per directory, so 1,000 files made one after another before the first chunk
    was written cost a quarter of a 2 GB restore (docs/backups.md).
    """

    def __init__(
        self, beneath: Beneath, files: list[FileEntry], ids: tuple[int, int] | None
    ) -> None:
        self.beneath = beneath
        self.files = sorted(files, key=lambda f: f.offset)
        self.ids = ids
        self.lock = threading.Lock()
        self.made: dict[str, Future[None]] = {}
        self.creating = Background(self._create_all, "pgdr-files")

    def __enter__(self) -> _Files:
        self.creating.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.creating.__exit__(*exc)

    def check(self) -> None:
        """Stop the restore if creating the files has failed already."""
        self.creating.check()

    def _create_all(self, stopped: Callable[[], bool]) -> None:
        for entry in self.files:
            if stopped():
                return
            self.ensure(entry.path)

    def ensure(self, path: str) -> None:
        """Create ``path`` (empty, mode 0600) unless done or under way; raises what its
        creation raised, in whichever thread asks."""
        with self.lock:
            made = self.made.get(path)
            mine = made is None
            if made is None:
                made = self.made[path] = Future()
        if mine:
            try:
                self._create(path)
            except BaseException as exc:
                made.set_exception(exc)
            else:
                made.set_result(None)
        made.result()

    def _create(self, path: str) -> None:
        fd = self.beneath.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, create_parents=True)
        try:
            if self.ids:
                os.fchown(fd, *self.ids)
        finally:
            os.close(fd)


class _ChunkWriter:
    """Writes each chunk's bytes into the files it holds, at their offsets (thread-safe)."""

    def __init__(
        self,
        repo: Repository,
        manifest: Manifest,
        data_key: DataKey,
        target: Path,
        files: list[FileEntry],
        beneath: Beneath,
        created: _Files | None = None,
    ) -> None:
        self.repo = repo
        self.created = created
        self.manifest = manifest
        self.data_key = data_key
        self.target = target
        self.beneath = beneath
        self.holders: list[list[FileEntry]] = [[] for _ in manifest.chunks]
        self.local = threading.local()  # each thread's piece buffers, reused chunk after chunk
        # every file's digest, recomputed from the bytes written (manifests of the pieces scheme)
        self.digests = PieceDigests() if manifest.digest_scheme == PIECES else None
        for entry in sorted(files, key=lambda f: f.offset):
            if entry.size:
                for index in manifest.chunks_of(entry):
                    self.holders[index].append(entry)

    def __call__(self, index: int) -> int:
        position = start = index * self.manifest.chunk_size
        targets = self.holders[index]
        first = 0
        fds: dict[str, int] = {}
        # path: (where its piece starts in the file, the piece's digest so far)
        hashers: dict[str, tuple[int, xxhash.xxh3_128]] = {}
        try:
            scratch = thread_scratch()
            pieces = fetch_chunk_pieces(self.repo, self.manifest, self.data_key, index, scratch)
            for piece in pieces:
                end = position + len(piece)
                while first < len(targets) and _end(targets[first]) <= position:
                    first += 1
                for entry in targets[first:]:
                    if entry.offset >= end:
                        break
                    written = self._write(fds, entry, piece, position, end)
                    if written is not None and self.digests is not None:
                        at, data = written
                        hashers.setdefault(entry.path, (at, piece_hasher()))[1].update(data)
                position = end
        finally:
            for fd in fds.values():
                os.close(fd)
        if self.digests is not None:
            for path, (at, hasher) in hashers.items():
                self.digests.add(path, at, hasher.digest())
        return position - start

    def open_own(self, path: str, flags: int) -> int:
        """Open the restore's file ``path``, a regular file with no other name: one that
        someone swapped in since it was made or checked (a hard link to a file elsewhere, a
        FIFO, a device) is never written to, nor waited for."""
        try:
            fd = self.beneath.open(path, flags | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # a FIFO that nobody reads
                raise
        else:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                return fd
            os.close(fd)
        raise RuntimeFailure(f"{path} in {self.target} changed during the restore.")

    def buffer(self, name: str) -> bytearray:
        """This thread's ``PIECE``-sized buffer ``name`` (allocated once per thread)."""
        found: bytearray | None = getattr(self.local, name, None)
        if found is None:
            found = bytearray(PIECE)
            setattr(self.local, name, found)
        return found

    def mismatched(self, files: list[FileEntry]) -> list[str]:
        """The files whose bytes, as written, do not match their digest in the manifest."""
        if self.digests is None:
            return []
        return [f.path for f in files if self.digests.of(f.path) != f.digest]

    def _write(
        self, fds: dict[str, int], entry: FileEntry, view: memoryview, position: int, end: int
    ) -> tuple[int, memoryview] | None:
        """Write ``entry``'s part of ``view`` (archive bytes ``[position, end)``); returns where
        in the file that part starts and its bytes, or None if it holds none of the file."""
        low = max(entry.offset, position)
        high = min(_end(entry), end)
        if low >= high:
            return None
        fd = fds.get(entry.path)
        if fd is None:
            if self.created is not None:
                self.created.ensure(entry.path)
            fd = fds[entry.path] = self.open_own(entry.path, os.O_WRONLY)
        part = view[low - position : high - position]
        pwrite_all(fd, part, low - entry.offset)
        start_writeback(fd, low - entry.offset, high - low)
        return low - entry.offset, part


def write_backup(
    repo: Repository,
    manifest: Manifest,
    data_key: DataKey,
    target: Path,
    *,
    owner: ServiceUser | None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> int:
    """Write one backup into the empty directory ``target``, chunks in parallel.

    The layout (directories, empty files, symlinks) comes from the authenticated manifest; then
    every chunk is fetched, checked (size, digest, AES-GCM) and its bytes written straight to
    the files it holds at their offsets, on several threads; every file's digest is recomputed
    from those bytes and checked (per-piece manifests). Returns the bytes written.
    """
    files = _create_dirs(manifest, target, owner)
    cpus = os.cpu_count() or 1
    workers = workers or repo.store.workers(cpus)
    with Beneath(target) as beneath, _Files(beneath, files, _owner_ids(owner)) as created:
        writer = _ChunkWriter(repo, manifest, data_key, target, files, beneath, created)
        indexes = read_ahead(repo, manifest, range(len(manifest.chunks)), workers)
        for size in parallel_map(writer, indexes, workers):
            created.check()
            if progress:
                progress(size)
    for entry in files:
        if (target / entry.path).lstat().st_size != entry.size:
            raise DamagedBackup(
                f"{entry.path} in backup {manifest.id} was not restored to its recorded size."
            )
    check_digests(manifest, writer.mismatched(files))
    return sum(f.size for f in files)


def check_digests(manifest: Manifest, mismatched: list[str]) -> None:
    """Refuse a restore in which some files do not match their digests (one sentence)."""
    if mismatched:
        raise DamagedBackup(
            f"{mismatched[0]} in backup {manifest.id} does not match its checksum"
            + (f" (and {len(mismatched) - 1} more files)." if len(mismatched) > 1 else ".")
        )


def extract_backup(
    repo: Repository,
    manifest: Manifest,
    data_key: DataKey,
    target: Path,
    *,
    owner: ServiceUser | None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> _Extractor:
    """Stream one backup's archive into the empty directory ``target``."""
    extractor = _Extractor(target, manifest, owner)
    indexes = read_ahead(repo, manifest, range(len(manifest.chunks)), workers)
    try:
        for plain in parallel_map(
            lambda i: fetch_chunk(repo, manifest, data_key, i), indexes, workers
        ):
            extractor.feed(plain)
            if progress:
                progress(len(plain))
        extractor.finish()
    except BaseException:
        extractor.abort()
        raise
    return extractor


def _check_target(target: Path, force: bool) -> None:
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} exists and is not a directory.")
    if target.is_dir() and os.path.ismount(target):
        raise ConfigError(
            f"{target} is a mount point: a restore writes beside its target and renames the "
            f"result into place, which cannot replace a mount point; restore into a directory "
            f"on it (such as {target / 'data'})."
        )
    if target.is_dir() and any(target.iterdir()):
        if not force:
            raise ConfigError(
                f"{target} already exists and is not empty; restore into a new directory "
                "or pass --force to replace it."
            )
        if not (target / "PG_VERSION").is_file():
            raise ConfigError(
                f"{target} is not empty and holds no PostgreSQL data directory; --force "
                "replaces only a data directory: restore into a new directory."
            )
        if (target / "postmaster.pid").exists():
            raise ConfigError(
                f"{target} holds a data directory with a postmaster.pid; stop that server first."
            )
        mounted = mounts_below(target)
        if mounted:
            raise ConfigError(
                f"{target / mounted[0]} is a mount point: --force would remove what is mounted "
                "there with the directory it replaces; unmount it first (or restore with "
                "--delta, which keeps a mounted pg_wal)."
            )


def lay_down(
    repo: Repository,
    manifest: Manifest,
    directory: Path,
    owner: ServiceUser | None,
    progress: Progress | None,
    workers: int | None,
    *,
    check_files: bool,
) -> int:
    """Authenticate ``manifest`` and write its backup into ``directory``; returns bytes."""
    key = manifest.authenticate(repo.master_key, f"of backup {manifest.id}")
    if check_files:
        extractor = extract_backup(
            repo, manifest, key, directory, owner=owner, progress=progress, workers=workers
        )
        return extractor.bytes_written
    return write_backup(
        repo, manifest, key, directory, owner=owner, progress=progress, workers=workers
    )


def restore_backup(
    repo: Repository,
    backup_id: str,
    target: Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
    on_start: Callable[[Manifest, int], None] | None = None,
    workers: int | None = None,
    service_user: str | None = None,
    check_files: bool = False,
) -> RestoreResult:
    """Restore backup ``backup_id`` (an id, prefix or ``latest``) into the new directory ``target``.

    The directory ends up owned by the service user (mode 0700), holding the backup's files and
    the WAL that makes it consistent; it is not started. ``on_start(manifest, total_bytes)`` is
    called before data flows (for a progress bar).

    Every chunk is checked against the authenticated manifest (size, digest, AES-GCM) before
    its bytes are written, and every file's size and digest afterwards (manifests older than
    per-piece digests: sizes only, said in the notes); ``check_files`` recomputes each file's
    digest while extracting the archive in order (one stream, slower).
    """
    log.info("Restoring backup %s from %s into %s.", backup_id, repo.url, target)
    began = time.monotonic()
    target = target.resolve()
    remove_stale(target.parent)  # first: a killed --force restore's old contents go back
    _check_target(target, force)
    manifest = repo.read_manifest(repo.resolve_id(backup_id))
    chain = backup_chain(repo, manifest)
    owner = resolve_service_user(service_user or repo.settings.service_user)
    total = sum(m.stream_size for m in chain)
    check_space(target.parent, total, "restore")
    if on_start:
        on_start(manifest, total)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with restore_record(repo.settings, target), held(target):
            written, files, notes = _restore_into(
                repo, chain, target, owner, progress, workers, check_files, force
            )
    except OSError as exc:
        raise write_failure(exc, target.parent, "restore") from exc
    return RestoreResult(
        backup_id=manifest.id,
        data_dir=target,
        chain=[m.id for m in chain],
        pg_major=manifest.pg_major,
        pg_version=manifest.pg_version,
        bytes_restored=written,
        files=files,
        duration_s=time.monotonic() - began,
        notes=notes,
    )


STANDBY_SIGNAL = "standby.signal"
FROM_A_STANDBY = (
    "The backup was taken from a standby: its standby.signal was left out, so the restored "
    "copy does not follow that standby's primary."
)


def not_a_standby(directory: Path) -> list[str]:
    """A backup taken from a replica holds its ``standby.signal``: started as it is, the restored
    copy would stream from the replica's primary. Taken out (before the copy is put in place,
    so that no moment leaves a directory that would start as a replica), the copy starts on its
    own (its ``primary_conninfo`` is then unused); ``--as-standby`` makes a replica on purpose.
    The delta restore takes it out before it writes pg_control (:mod:`pgdr.restore.delta`)."""
    signal = directory / STANDBY_SIGNAL
    if not signal.exists():
        return []
    signal.unlink()
    return [FROM_A_STANDBY]


def unchecked_files(chain: list[Manifest]) -> list[str]:
    """What a restore without ``--check-files`` does not check: the files of backups whose
    manifest predates per-piece digests (their chunks are still authenticated)."""
    older = [m.id for m in chain if m.digest_scheme != PIECES]
    if not older:
        return []
    return [
        f"File digests not checked for backup {', '.join(older)} (its manifest predates "
        "per-piece digests; every chunk was authenticated): --check-files checks them."
    ]


def _restore_into(
    repo: Repository,
    chain: list[Manifest],
    target: Path,
    owner: ServiceUser,
    progress: Progress | None,
    workers: int | None,
    check_files: bool,
    force: bool,
) -> tuple[int, int, list[str]]:
    """Write ``chain`` into a staging sibling of ``target``, then rename it into place; the
    staging (and any chain scratch) is removed whatever happens."""
    manifest = chain[-1]
    staging = staging_dir(target)
    scratch: list[Path] = []
    claim = contextlib.ExitStack()  # the staging's lock, held until it is in place or gone
    notes = [] if check_files else unchecked_files(chain)
    try:
        claim.enter_context(claimed(staging))  # a chain's stays empty for pg_combinebackup
        if len(chain) == 1:
            owner.own(staging, 0o700)
            written = lay_down(
                repo, manifest, staging, owner, progress, workers, check_files=check_files
            )
            files = sum(1 for f in manifest.files if f.kind == "file")
        else:
            written, files = _restore_chain(
                repo, chain, staging, owner, scratch, claim, progress, workers, check_files
            )
            notes.append(f"Combined {len(chain)} backups with pg_combinebackup.")
        notes += not_a_standby(staging)
        sync_filesystem(staging)
        with finishing(notes):
            _put_in_place(staging, target, force, notes)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        for path in scratch:  # gone while still held
            shutil.rmtree(path, ignore_errors=True)
        claim.close()
    return written, files, notes


def _put_in_place(staging: Path, target: Path, force: bool, notes: list[str]) -> None:
    """Rename the written ``staging`` to ``target``; with ``force``, the previous contents are
    renamed aside first (and back if the new ones cannot take their place), then removed."""
    if target.exists() and force:
        aside = staging_dir(target, "replaced")
        target.rename(aside)
        try:
            staging.rename(target)
        except BaseException:
            aside.rename(target)  # the previous contents stay where they were
            raise
        shutil.rmtree(aside, ignore_errors=True)
        notes.append(f"Replaced the previous contents of {target} (--force).")
    else:
        if target.exists():
            target.rmdir()  # an empty directory (checked): never anything else
        staging.rename(target)
    fsync_directory(target.parent)  # the rename itself survives a crash


@contextlib.contextmanager
def finishing(notes: list[str]) -> Iterator[None]:
    """Ctrl-C while the restored directory is put in place (and the one it replaces removed)
    does not stop that half-way, with the new contents in place and the command saying it was
    interrupted: it waits, and the restore ends with a note of it."""
    arrived: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, _frame: arrived.append(signum))
    except ValueError:  # not the main thread: the interrupt goes to the main thread anyway
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if arrived:
        notes.append(
            "Ctrl-C came while the restored directory was being put in place; that was "
            "finished first, so the restore is complete."
        )


def _restore_chain(
    repo: Repository,
    chain: list[Manifest],
    staging: Path,
    owner: ServiceUser,
    scratch: list[Path],
    claim: contextlib.ExitStack,
    progress: Progress | None,
    workers: int | None,
    check_files: bool,
) -> tuple[int, int]:
    """Lay each backup of ``chain`` down into a scratch directory of its own (listed in
    ``scratch`` and held in ``claim``: held, no restore or ``pgdr cleanup`` in another PID
    namespace takes it for a dead one's), then let ``pg_combinebackup`` write the result into
    ``staging``."""
    installation = installation_for_major(chain[-1].pg_major, repo.settings.pg_bin)
    dirs: list[Path] = []
    for member in chain:
        part = staging.with_name(f"{staging.name}-{member.id}")
        scratch.append(part)
        claim.enter_context(claimed(part))
        lay_down(repo, member, part, None, progress, workers, check_files=check_files)
        dirs.append(part)
    runner.run([installation.tool("pg_combinebackup"), *dirs, "-o", staging])
    written = 0
    files = 0
    for path in [staging, *staging.rglob("*")]:
        if owner.switch:
            os.lchown(path, owner.uid, owner.gid)
        if path.is_file() and not path.is_symlink():
            written += path.stat().st_size
            files += 1
    staging.chmod(0o700)
    return written, files
