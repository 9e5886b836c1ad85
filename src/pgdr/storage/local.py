"""A repository on a local (or mounted) filesystem.

Atomicity: each object is written to a temporary file in the same directory, fsynced, renamed
over its final name and the directory fsynced, so a crash or a full disk leaves either the old
object or none, plus at most a ``.tmp-*`` file that the next listing ignores.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from pgdr.core.errors import RuntimeFailure
from pgdr.storage.base import HeldLock, ObjectInfo, ObjectNotFound, ObjectStore, check_key
from pgdr.storage.lock import LOCAL_LOCK_NAME, hold_with_flock

TMP_PREFIX = ".tmp-"
HIDDEN_PREFIX = ".pgdr-"  # the lock file and probes: never objects


def _describe_os_error(exc: OSError, action: str, path: Path) -> RuntimeFailure:
    if exc.errno == errno.ENOSPC:
        return RuntimeFailure(f"The disk holding {path} is full; {action} stopped.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RuntimeFailure(f"The repository at {path} is not writable ({exc.strerror}).")
    return RuntimeFailure(f"{action.capitalize()} {path} failed: {exc.strerror or exc}.")


class LocalStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp_name: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            Path(tmp_name).replace(path)
            tmp_name = None
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise _describe_os_error(exc, "writing", path) from exc
        finally:
            if tmp_name is not None:
                Path(tmp_name).unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        with self._reading(key, path):
            return path.read_bytes()

    def get_into(self, key: str, buffer: bytearray) -> memoryview:
        path = self._path(key)
        with self._reading(key, path), path.open("rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > len(buffer):
                return memoryview(handle.readall())
            view, done = memoryview(buffer), 0
            while done < size and (count := handle.readinto(view[done:size])):
                done += count
            return view[:done]

    @contextmanager
    def _reading(self, key: str, path: Path) -> Iterator[None]:
        """Reading ``key`` (at ``path``): a missing object is :class:`ObjectNotFound`, any other
        failure one sentence."""
        try:
            yield
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} is missing from the repository at {self.root}.") from None
        except OSError as exc:
            raise _describe_os_error(exc, "reading", path) from exc

    def prefetch(self, key: str) -> None:
        """Ask the kernel to read the object into the page cache now. From a cold cache, chunks
        read one after another each wait for the disk in turn; read ahead, they arrive while
        the chunks before them are opened and written (docs/backups.md)."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # missing or unreadable: the get reports it
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass  # a hint the file system does not take
        finally:
            os.close(fd)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return iter(())
        base = self.root
        found: list[ObjectInfo] = []
        for dirpath, _dirnames, filenames in os.walk(base):
            for name in filenames:
                if name.startswith((TMP_PREFIX, HIDDEN_PREFIX)):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(base).as_posix()
                if key.startswith(prefix):
                    found.append(ObjectInfo(key, full.stat().st_size))
        return iter(sorted(found, key=lambda info: info.key))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise _describe_os_error(exc, "deleting", path) from exc
        # Leave no empty directories behind, but never remove the root itself.
        parent = path.parent
        while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

    def hold_lock(
        self, key: str, data: bytes, is_stale: Callable[[bytes], bool]
    ) -> AbstractContextManager[HeldLock]:
        """An ``flock`` on ``.pgdr-lock``: the kernel drops it with the process (never stale)."""
        return hold_with_flock(self, self.root / LOCAL_LOCK_NAME, key, data)

    def clean_temporary(self, older_than_s: float = 0.0) -> int:
        """Remove ``.tmp-*`` leftovers of interrupted writes.

        ``older_than_s`` spares younger ones: another process (the WAL streamer) may be writing
        them right now.
        """
        removed = 0
        cutoff = time.time() - older_than_s
        for tmp in self.root.rglob(f"{TMP_PREFIX}*") if self.root.is_dir() else ():
            try:
                if older_than_s and tmp.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed
