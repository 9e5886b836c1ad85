"""Delta restore: bring an existing data directory back to a backup, rewriting only what differs.

pgBackRest's ``--delta``: the quick way to rebuild a failed primary or a lagging replica. Files
smaller than 1 MiB whose size and digest match the (authenticated) manifest are left alone;
larger files and the others are compared with the chunks holding them (fetched, checked and
opened), and only the 8 KiB pages that differ are written: a large file is read once, not
hashed and then read again. Files, directories and links the backup does not hold are
removed, so the result is byte for byte the backup (hence starts, and replays WAL, like a
full restore), except that a backup taken from a standby loses its ``standby.signal``, as in
the full restore.

Invariants: an existing directory is changed only with ``force``; a directory a live server
runs on (see ``cluster.processes.server_on``) is refused even with ``force``; a
directory that does not hold a data directory of the backup's major version is refused; an
incremental chain is refused (restore it in full). Nothing is written outside ``target``:
the directory is walked, cleaned and written through directory descriptors without following
any link (a link planted while the restore runs makes it fail, never write through it), and a
file with other names (a hard link, as ``pg_upgrade --link`` leaves) or that is not a regular
file is replaced, never written in place. ``global/pg_control`` is removed before anything
else changes and written last, once every other file is in place, checked and on disk: a delta
restore that fails half-way leaves a directory PostgreSQL refuses to start (run it again to
finish), never a mix of old and new pages that it would start on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType

from pgdr.backup.chunks import DamagedBackup, read_ahead
from pgdr.backup.digest import digest_of_descriptor
from pgdr.backup.manifest import FileEntry, Manifest
from pgdr.backup.repository import Repository
from pgdr.cluster.processes import server_on
from pgdr.cluster.service_user import ServiceUser, resolve_service_user
from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.crypto import Background, DataKey, parallel_map
from pgdr.restore.base import (
    FROM_A_STANDBY,
    STANDBY_SIGNAL,
    RestoreResult,
    _ChunkWriter,
    backup_chain,
    check_digests,
    pwrite_all,
    sync_filesystem,
    unchecked_files,
)
from pgdr.restore.beneath import DIR_FLAGS, Beneath, check_layout, mounts_below
from pgdr.restore.staging import held
from pgdr.restore.walmap import ChangedPages, NoMap, changed_pages

PAGE = 8192
CONTROL = "global/pg_control"
HASH_BELOW = 1 << 20  # smaller files are hashed first; larger ones compared chunk by chunk
Progress = Callable[[int], None]


def check_delta_target(target: Path, manifest: Manifest, force: bool) -> None:
    """Refuse what a delta restore must not touch (one sentence each)."""
    version = target / "PG_VERSION"
    if not version.is_file():
        raise ConfigError(f"{target} is not a data directory; restore without --delta.")
    found = version.read_bytes()[:64].decode(errors="replace").strip()  # damaged, perhaps
    if found != str(manifest.pg_major):
        raise ConfigError(
            f"{target} holds PostgreSQL {found!r} by its PG_VERSION, backup {manifest.id} "
            f"is {manifest.pg_major}; restore without --delta into a new directory."
        )
    running = server_on(target)
    if running is not None:
        raise ConfigError(
            f"A server is running on {target} ({running}); stop it first (or, if that is "
            "another server, move its postmaster.pid aside)."
        )
    if not force:
        raise ConfigError(f"--delta rewrites {target} in place; pass --force to allow it.")
    held = {f.path for f in manifest.files if f.kind == "dir"}
    for point in mounts_below(target):
        if point not in held:
            raise ConfigError(
                f"{target / point} is a mount point where backup {manifest.id} holds no "
                "directory: the delta restore would remove or rewrite what is mounted there; "
                "unmount it first."
            )


def _pages_differing(present: memoryview, wanted: memoryview, at: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` windows in which two equally long views of a file's bytes from
    offset ``at`` differ, windows being the file's ``PAGE``s (partial at either end).

    Aligned on the file's pages, a changed page of the file is one window, written whole (a
    window across two pages would write parts of both, each a read-modify-write for the kernel
    where the page is not cached).
    Compared as bytes: 8 KiB copies come from the heap and compare by memcmp, 0.4 ms per MiB
    here; a memoryview compares element by element (15 times slower), and one copy of a whole
    1 MiB piece costs a page fault per 4 KiB (8 times slower)."""
    edges = [0, *range(-at % PAGE or PAGE, len(wanted), PAGE), len(wanted)]
    return [
        (start, end)
        for start, end in pairwise(edges)
        if start < end and bytes(present[start:end]) != bytes(wanted[start:end])
    ]


class _DeltaWriter(_ChunkWriter):
    """Writes only the pages of a chunk that differ from what the file already holds; of a file
    in ``pages``, only the pages listed there, unread (the WAL names them: see ``walmap``)."""

    lock = threading.Lock()
    written = 0

    pages: Mapping[str, list[int]] = MappingProxyType({})

    def limited_to(self, pages: dict[str, list[int]], files: list[FileEntry]) -> _DeltaWriter:
        """Of each of ``files`` listed in ``pages``, write only the pages listed (unread), and
        fetch only the chunks that hold them."""
        self.pages = pages
        size = self.manifest.chunk_size
        for entry in files:
            wanted = pages.get(entry.path)
            if wanted is None:
                continue
            edges = (entry.offset + p * PAGE + e for p in wanted for e in (0, PAGE - 1))
            keep = {at // size for at in edges}
            for index in self.manifest.chunks_of(entry):
                if index not in keep:
                    self.holders[index].remove(entry)
        return self

    def _write(
        self, fds: dict[str, int], entry: FileEntry, view: memoryview, position: int, end: int
    ) -> tuple[int, memoryview] | None:
        low, high = max(entry.offset, position), min(entry.offset + entry.size, end)
        if low >= high:
            return None
        fd = fds.get(entry.path)
        if fd is None:
            fd = fds[entry.path] = self.open_own(entry.path, os.O_RDWR)
        at = low - entry.offset
        wanted = view[low - position : high - position]
        listed = self.pages.get(entry.path)
        if listed is not None:
            self._count(_write_pages(fd, listed, at, wanted))
            return None  # not all of the file passes here: its digest cannot be checked
        present = memoryview(self.buffer("present"))[: len(wanted)]
        if os.preadv(fd, [present], at) != len(wanted):
            raise RuntimeFailure(f"{entry.path} in {self.target} changed size during the restore.")
        count = 0
        for start, stop in _pages_differing(present, wanted, at):
            count += pwrite_all(fd, wanted[start:stop], at + start)
        self._count(count)
        return at, wanted

    def _count(self, written: int) -> None:
        with self.lock:
            self.written += written


def _write_pages(fd: int, pages: list[int], at: int, wanted: memoryview) -> int:
    """Write the parts of ``pages`` (sorted page numbers) that ``wanted``, the file's bytes from
    offset ``at``, holds; returns the bytes written."""
    count, end = 0, at + len(wanted)
    for page in pages[bisect_left(pages, at // PAGE) :]:
        start, stop = max(page * PAGE, at), min((page + 1) * PAGE, end)
        if start >= end:
            break
        count += pwrite_all(fd, wanted[start - at : stop - at], start)
    return count


def _kind(item: os.DirEntry[str]) -> str:
    if item.is_symlink():
        return "symlink"
    if item.is_dir(follow_symlinks=False):
        return "dir"
    return "file" if item.is_file(follow_symlinks=False) else "other"


LATER_DIRS = 64  # directories whose extra files are removed in the background (Later)


class Later(list[tuple[int, list[str]]]):
    """Files to remove: a descriptor of their directory (closed by the owner), their names.

    At most ``LATER_DIRS`` directories are kept open for it; the extra files of any more (a
    cluster of thousands of databases, each with tables made since the backup) are removed at
    once, so that the descriptors never run out (1,024 by default)."""


def _remove_extra(beneath: Beneath, expected: dict[str, FileEntry], later: Later) -> int:
    """Remove everything under the target the backup does not hold (or holds as another kind,
    or, for a link, pointing elsewhere), walking by descriptors: never through a link. Regular
    files at paths the backup does not use at all are left in ``later``, for
    :func:`_remove_later`; how many entries go either way."""
    return _sweep(beneath, beneath.fd, "", expected, later)


def _remove_later(later: Later) -> Callable[[Callable[[], bool]], None]:
    """The removal of ``later``'s files, to run in the background while the files are
    rewritten: a failed primary's pg_wal holds hundreds of recycled segments the backup does
    not, and removing a written 16 MiB file waits about 3 ms here, one after another or
    not, with hardly any CPU (docs/backups.md)."""

    def remove(stopped: Callable[[], bool]) -> None:
        for fd, names in later:
            for name in names:
                if stopped():
                    return
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)

    return remove


def _sweep(
    beneath: Beneath, fd: int, prefix: str, expected: dict[str, FileEntry], later: Later
) -> int:
    removed, unwanted = 0, []
    with os.scandir(fd) as listing:
        items = list(listing)
    for item in items:
        relative = prefix + item.name
        kind, entry = _kind(item), expected.get(relative)
        if (
            kind == "symlink"
            and entry is not None
            and entry.kind == "symlink"
            and os.readlink(item.name, dir_fd=fd) != entry.linkname
        ):
            entry = None  # a link pointing elsewhere is replaced
        if entry is not None and entry.kind == kind:
            if kind == "dir":
                removed += _sweep_below(beneath, fd, item.name, relative, expected, later)
            continue
        if kind == "dir":
            shutil.rmtree(item.name, dir_fd=fd)
        elif kind == "file" and entry is None:
            unwanted.append(item.name)
        else:  # in the way of what the backup has there
            os.unlink(item.name, dir_fd=fd)
        removed += 1
    if unwanted and len(later) < LATER_DIRS:
        later.append((os.dup(fd), unwanted))
    else:
        for name in unwanted:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
    return removed


def _sweep_below(
    beneath: Beneath,
    fd: int,
    name: str,
    relative: str,
    expected: dict[str, FileEntry],
    later: Later,
) -> int:
    try:
        child = os.open(name, DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        raise RuntimeFailure(
            f"{relative} in {beneath.root} changed during the restore ({exc.strerror})."
        ) from exc
    try:
        return _sweep(beneath, child, relative + "/", expected, later)
    finally:
        os.close(child)


def _own_file(beneath: Beneath, entry: FileEntry, owner: ServiceUser) -> int:
    """A descriptor of ``entry``'s file, a regular file with no other name: created if
    missing, replaced by a new empty file if it is something else or has other names."""
    flags = os.O_RDWR | os.O_NONBLOCK  # a FIFO in its place must not block the restore
    try:
        fd = beneath.open(entry.path, flags)
    except FileNotFoundError:
        fd = None
    if fd is not None:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
            _give(fd, info, owner, 0o600)
            return fd
        os.close(fd)
        beneath.unlink(entry.path)
    fd = beneath.open(entry.path, flags | os.O_CREAT | os.O_EXCL, create_parents=True)
    if owner.switch:
        os.fchown(fd, owner.uid, owner.gid)
    return fd


def _give(fd: int, info: os.stat_result, owner: ServiceUser, mode: int) -> None:
    """Make ``fd``'s file or directory what a full restore makes it: ``mode``, owned by the
    service user (PostgreSQL refuses a data directory open to others, cannot read what is
    not its user's)."""
    if stat.S_IMODE(info.st_mode) != mode:
        os.fchmod(fd, mode)
    if owner.switch and (info.st_uid, info.st_gid) != (owner.uid, owner.gid):
        os.fchown(fd, owner.uid, owner.gid)


Verdict = bool | list[int]  # unchanged, compare with the backup, or rewrite these pages


def _verdict(
    beneath: Beneath,
    manifest: Manifest,
    entry: FileEntry,
    owner: ServiceUser,
    changes: ChangedPages | None,
) -> Verdict:
    """Whether ``entry`` must be (re)written (``True``: compared page by page with its chunks),
    or the pages the WAL says changed (with those the file lacks if it is shorter); creates the
    file or truncates it to its size if needed."""
    fd = _own_file(beneath, entry, owner)
    try:
        size = os.fstat(fd).st_size
        pages = changes.pages_of(entry.path) if changes is not None else None
        if pages is not None:  # as pg_rewind: cut to size, the WAL's pages, a missing tail
            if size != entry.size:
                os.ftruncate(fd, entry.size)
            tail = range(size // PAGE, -(-entry.size // PAGE)) if size < entry.size else ()
            return sorted({*pages, *tail}) or False
        if size == entry.size and size > HASH_BELOW:
            return True  # compared page by page against its chunks: one read instead of two
        if size == entry.size:
            return digest_of_descriptor(fd, manifest.file_digest(entry)) != entry.digest
        os.ftruncate(fd, entry.size)
        return True
    finally:
        os.close(fd)


def _lay_out(beneath: Beneath, manifest: Manifest, owner: ServiceUser) -> list[FileEntry]:
    """The directory itself, its directories and links as a full restore leaves them; returns
    the regular files."""
    _give(beneath.fd, os.fstat(beneath.fd), owner, 0o700)
    ids = (owner.uid, owner.gid) if owner.switch else None
    files: list[FileEntry] = []
    for entry in manifest.files:
        if entry.kind == "dir":
            fd = beneath.mkdir(entry.path)
            try:
                if ids:
                    os.fchown(fd, *ids)
            finally:
                os.close(fd)
        elif entry.kind == "symlink" and beneath.readlink(entry.path) != entry.linkname:
            beneath.symlink(entry.path, entry.linkname, ids)
        elif entry.kind == "file":
            files.append(entry)
    return files


def _remove_control(beneath: Beneath) -> None:
    """Remove ``global/pg_control`` before anything else changes: until it is written back,
    last, PostgreSQL refuses to start on the directory."""
    try:
        beneath.unlink(CONTROL)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EISDIR):
            raise  # else missing, or something the sweep replaces: nothing to remove


@dataclass
class _Outcome:
    """What a delta restore did: the files it (re)wrote, all the backup's files, entries
    removed, chunks read, bytes written, and files left unread because the WAL names no page."""

    changed: list[FileEntry] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    removed: int = 0
    read: int = 0
    written: int = 0
    unread: int = 0
    by_pages: int = 0
    from_a_standby: bool = False


def _write_changed(
    writer: _DeltaWriter, files: list[FileEntry], workers: int, progress: Progress | None
) -> tuple[int, int]:
    """Write the writer's files (chunks in parallel), check their sizes and the digests of those
    written whole, and put them on disk; returns (chunks read, bytes written)."""
    indexes = [i for i, holders in enumerate(writer.holders) if holders]
    ahead = read_ahead(writer.repo, writer.manifest, indexes, workers)
    for size in parallel_map(writer, ahead, workers):
        if progress:
            progress(size)
    for entry in files:
        if (writer.target / entry.path).lstat().st_size != entry.size:
            raise DamagedBackup(f"{entry.path} was not restored to its recorded size.")
    check_digests(
        writer.manifest, writer.mismatched([f for f in files if f.path not in writer.pages])
    )
    sync_filesystem(writer.target)
    return len(indexes), writer.written


def _rewrite_group(
    writer_of: Callable[[list[FileEntry], dict[str, list[int]]], _DeltaWriter],
    check: Callable[[FileEntry], Verdict],
    group: list[FileEntry],
    changes: ChangedPages | None,
    workers: int,
    progress: Progress | None,
    outcome: _Outcome,
) -> None:
    """Decide, then write, one group of files (see :func:`_rewrite`)."""
    verdicts = list(zip(group, parallel_map(check, group, workers), strict=True))
    differing = [f for f, verdict in verdicts if verdict is not False]
    pages = {f.path: v for f, v in verdicts if isinstance(v, list)}
    chunks, count = _write_changed(writer_of(differing, pages), differing, workers, progress)
    outcome.changed += differing
    outcome.read, outcome.written = outcome.read + chunks, outcome.written + count
    outcome.by_pages += len(pages)
    if changes is not None:  # unchanged by the WAL's word (a file compared has a verdict)
        unread = [f for f, v in verdicts if v is False and changes.pages_of(f.path) is not None]
        outcome.unread += len(unread)


def _rewrite(
    repo: Repository,
    manifest: Manifest,
    data_key: DataKey,
    target: Path,
    owner: ServiceUser,
    workers: int,
    progress: Progress | None,
    changes: ChangedPages | None,
) -> _Outcome:
    """Clean, lay out and rewrite ``target``."""
    outcome, later = _Outcome(), Later()
    try:
        with Beneath(target) as beneath:
            _remove_control(beneath)
            outcome.removed = _remove_extra(beneath, {f.path: f for f in manifest.files}, later)
            outcome.files = _lay_out(beneath, manifest, owner)

            def writer_of(files: list[FileEntry], pages: dict[str, list[int]]) -> _DeltaWriter:
                writer = _DeltaWriter(repo, manifest, data_key, target, files, beneath)
                return writer.limited_to(pages, files)

            def rewrite(group: list[FileEntry]) -> None:
                def check(entry: FileEntry) -> Verdict:
                    return _verdict(beneath, manifest, entry, owner, changes)

                _rewrite_group(writer_of, check, group, changes, workers, progress, outcome)

            # the files the backup does not hold are removed meanwhile; pg_control alone and
            # last: created only once every other file is in place and every other removed
            with Background(_remove_later(later), "pgdr-remove"):
                rewrite([f for f in outcome.files if f.path != CONTROL])
            outcome.from_a_standby = _remove_standby_signal(beneath)  # see not_a_standby
            rewrite([f for f in outcome.files if f.path == CONTROL])
    finally:
        for fd, _names in later:
            os.close(fd)
    return outcome


def _remove_standby_signal(beneath: Beneath) -> bool:
    """Take out the ``standby.signal`` a backup of a replica holds; whether there was one."""
    try:
        beneath.unlink(STANDBY_SIGNAL)
    except FileNotFoundError:
        return False
    return True


def _wal_map(
    repo: Repository, manifest: Manifest, data_key: DataKey, target: Path, by_wal: bool
) -> tuple[ChangedPages | None, list[str]]:
    """With ``by_wal``, the pages the WAL says changed, or a note saying why every page is read."""
    if not by_wal:
        return None, []
    try:
        return changed_pages(repo, manifest, data_key, target), []
    except NoMap as exc:
        return None, [f"Every page was read: the WAL cannot say which changed, because {exc}."]


def _summary(manifest: Manifest, done: _Outcome, changes: ChangedPages | None) -> list[str]:
    unchanged = len(done.files) - len(done.changed)
    notes = [
        f"Delta: {unchanged} files unchanged, {len(done.changed)} differed "
        f"({done.read} chunk reads of {len(manifest.chunks)} chunks, {done.written:,} bytes "
        f"written), {done.removed} entries removed."
    ]
    if changes is not None:
        notes.append(
            f"By the WAL: {changes.describe()}. {done.unread} relation files were left unread "
            f"(no page named) and {done.by_pages} had only the named pages rewritten: their "
            "other pages were not compared, and their digests not checked."
        )
    return notes


def delta_restore(
    repo: Repository,
    backup_id: str,
    target: Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
    workers: int | None = None,
    service_user: str | None = None,
    by_wal: bool = False,
) -> RestoreResult:
    """Make the existing data directory ``target`` byte for byte backup ``backup_id``; with
    ``by_wal``, the pages to rewrite are found in the WAL where it can say (see ``walmap``)."""
    began = time.monotonic()
    target = target.resolve()
    manifest = repo.read_manifest(repo.resolve_id(backup_id))
    check_delta_target(target, manifest, force)
    if len(backup_chain(repo, manifest)) > 1:
        raise ConfigError(
            f"Backup {manifest.id} is incremental; delta restore needs a full backup "
            "(restore without --delta)."
        )
    data_key = manifest.authenticate(repo.master_key, f"of backup {manifest.id}")
    check_layout(manifest.files, manifest.id)
    owner = resolve_service_user(service_user or repo.settings.service_user)
    workers = workers or len(os.sched_getaffinity(0))
    with held(target):
        changes, why = _wal_map(repo, manifest, data_key, target, by_wal)
        try:
            done = _rewrite(repo, manifest, data_key, target, owner, workers, progress, changes)
        except OSError as exc:
            raise RuntimeFailure(
                f"The delta restore of {target} stopped: {exc.strerror or exc} "
                f"({exc.filename or 'no file named'}); run it again to finish it."
            ) from exc
    notes = unchecked_files([manifest]) + ([FROM_A_STANDBY] if done.from_a_standby else [])
    return RestoreResult(
        backup_id=manifest.id,
        data_dir=target,
        chain=[manifest.id],
        pg_major=manifest.pg_major,
        pg_version=manifest.pg_version,
        bytes_restored=done.written,
        files=len(done.changed),
        duration_s=time.monotonic() - began,
        notes=[*_summary(manifest, done, changes), *why, *notes],
    )
