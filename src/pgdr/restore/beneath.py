"""Writing a restore strictly beneath its target directory, whatever the backup holds.

A backup may come from a compromised server (its manifest is authentic yet hostile), so the
restore trusts no path in it:

* every member path is relative, without ``..``, listed once, and of a kind pgdr restores;
* symbolic links exist only where PostgreSQL has them (``pg_wal`` and ``pg_tblspc/<oid>``), and
  no member lies beneath a symbolic link;
* every file and directory is opened relative to a directory descriptor, one component at a
  time, with ``O_NOFOLLOW``: even a link planted by someone else while the restore runs is
  never followed, so nothing is ever written outside the target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from pgdr.backup.chunks import DamagedBackup
from pgdr.backup.manifest import FileEntry

KINDS = ("dir", "file", "symlink")
SYMLINK_PLACES = re.compile(r"pg_wal|pg_tblspc/[0-9]+")
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(path: str, backup_id: str) -> tuple[str, ...]:
    pure = PurePosixPath(path)
    if pure.is_absolute() or not pure.parts or any(p in ("..", ".") for p in pure.parts):
        raise DamagedBackup(f"Backup {backup_id} contains an unsafe path {path!r}; refusing it.")
    return pure.parts


def joined(root: Path, path: str, backup_id: str) -> Path:
    """``root`` joined with a member path that was checked to be relative and without ``..``."""
    return root.joinpath(*_parts(path, backup_id))


def check_layout(entries: Iterable[FileEntry], backup_id: str) -> None:
    """Refuse a member list that could make a restore write outside its target."""
    links: set[tuple[str, ...]] = set()
    seen: set[tuple[str, ...]] = set()
    for entry in entries:
        parts = _parts(entry.path, backup_id)
        if entry.kind not in KINDS:
            raise DamagedBackup(
                f"Backup {backup_id} holds {entry.path} of a kind pgdr cannot restore."
            )
        if parts in seen:
            raise DamagedBackup(f"Backup {backup_id} lists {entry.path} twice; refusing it.")
        seen.add(parts)
        if any(parts[:n] in links for n in range(1, len(parts))):
            raise DamagedBackup(
                f"Backup {backup_id} holds {entry.path} beneath a symbolic link; refusing it "
                "(a restore never writes through a link)."
            )
        if entry.kind == "symlink":
            if not SYMLINK_PLACES.fullmatch("/".join(parts)):
                raise DamagedBackup(
                    f"Backup {backup_id} holds a symbolic link {entry.path} -> "
                    f"{entry.linkname}, where PostgreSQL has none; refusing it."
                )
            links.add(parts)


class Beneath:
    """Creates and opens paths below one root directory without following any link."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fd = os.open(root, DIR_FLAGS)

    def close(self) -> None:
        """Release the root's descriptor; closing twice is harmless (a failure path may)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> Beneath:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _parent(self, path: str, create: bool) -> tuple[int, str]:
        """A descriptor of ``path``'s directory (the caller closes it) and the last name."""
        parts = _parts(path, self.root.name)
        fd = os.dup(self._fd)
        try:
            for name in parts[:-1]:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o700, dir_fd=fd)
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1]

    def mkdir(self, path: str, mode: int = 0o700) -> int:
        """Create the directory (and its parents) if missing; returns a descriptor of it."""
        parent, name = self._parent(path, create=True)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, mode, dir_fd=parent)
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
            os.fchmod(fd, mode)
            return fd
        finally:
            os.close(parent)

    def open(self, path: str, flags: int, mode: int = 0o600, create_parents: bool = False) -> int:
        """Open a file below the root (``O_NOFOLLOW`` on every component)."""
        parent, name = self._parent(path, create=create_parents)
        try:
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)
        finally:
            os.close(parent)

    def readlink(self, path: str) -> str | None:
        """Where the link ``path`` points, or None if there is no link there."""
        try:
            parent, name = self._parent(path, create=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return os.readlink(name, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EINVAL):  # nothing there, or not a link
                return None
            raise
        finally:
            os.close(parent)

    def unlink(self, path: str) -> None:
        """Remove the file or link ``path`` (a link itself, never what it points to)."""
        parent, name = self._parent(path, create=False)
        try:
            os.unlink(name, dir_fd=parent)
        finally:
            os.close(parent)

    @property
    def fd(self) -> int:
        """The root's descriptor (for walking it without following links)."""
        return self._fd

    def symlink(self, path: str, target: str, owner: tuple[int, int] | None) -> None:
        parent, name = self._parent(path, create=True)
        try:
            os.symlink(target, name, dir_fd=parent)
            if owner is not None:
                os.chown(name, *owner, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)


def mounts_below(directory: Path) -> list[str]:
    """The mount points strictly inside ``directory`` (resolved), relative to it: what a
    removal or a rewrite in it would reach of other file systems, or of other places of the
    same one (bind mounts, a mounted file)."""
    try:
        lines = Path("/proc/self/mountinfo").read_bytes().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split(b" ")
        if len(fields) < 5:
            continue
        unescaped = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4])
        point = Path(os.fsdecode(unescaped))
        if point != directory and point.is_relative_to(directory):
            found.append(point.relative_to(directory).as_posix())
    return found
