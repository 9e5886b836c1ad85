"""The object-store interface every repository backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

from pgdr.core.errors import ConfigError, RuntimeFailure


class ObjectNotFound(RuntimeFailure):
    """The object does not exist (deleted, never written, or a wrong key)."""


class LockLost(RuntimeFailure):
    """A held lock was taken over by another process (it went stale unrefreshed)."""


class LockBusy(RuntimeFailure):
    """Another live writer holds the lock; ``holder`` is what it wrote (None if unknown)."""

    def __init__(self, holder: bytes | None) -> None:
        super().__init__("The lock is held by another process.")
        self.holder = holder


class HeldLock:
    """What the holder may do with its lock: refresh its description."""

    def __init__(self, store: ObjectStore, key: str) -> None:
        self.store = store
        self.key = key

    def refresh(self, data: bytes) -> None:
        self.store.put(self.key, data)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


def check_key(key: str) -> str:
    """Keys are relative, slash-separated, and never climb out of the store."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key


class ObjectStore(ABC):
    """A flat namespace of immutable-ish objects addressed by slash-separated keys.

    Callers never test a store's class: what differs between backends is a capability here
    (``remote``, :meth:`workers`, :meth:`prepare`, :meth:`clean_temporary`, :meth:`hold_lock`).
    """

    url: str
    remote: bool = False
    """Objects travel over a network (worth more parallel transfers than there are CPUs)."""

    def workers(self, cpus: int) -> int:
        """How many transfers to run at once on ``cpus`` CPUs."""
        return cpus * 2 if self.remote else cpus

    def prepare(self) -> None:  # noqa: B027 - most stores need nothing
        """Create what the store itself needs before the first write (an S3 bucket)."""

    def hold_lock(
        self, key: str, data: bytes, is_stale: Callable[[bytes], bool]
    ) -> AbstractContextManager[HeldLock]:
        """Hold the store's exclusive writer lock, described by ``data`` under ``key``.

        :class:`~pgdr.storage.lock.LockBusy` when another live writer holds it; ``is_stale``
        judges a description left by a writer that may be gone.
        """
        raise ConfigError(f"The store {self.url} offers no exclusive lock for writers.")

    def prefetch(self, key: str) -> None:  # noqa: B027 - a hint, which most stores ignore
        """Start reading ``key`` ahead of a coming :meth:`get`; never fails."""

    def clean_temporary(self, older_than_s: float = 0.0) -> int:
        """Remove leftovers of interrupted writes older than ``older_than_s``; how many."""
        return 0

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` atomically under ``key``, replacing any previous object."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object; :class:`ObjectNotFound` when missing."""

    def get_into(self, key: str, buffer: bytearray) -> memoryview:
        """The whole object, read into ``buffer`` where the store can and it fits (a view of
        ``buffer``, valid until the caller reuses it), else a view of a new object. A reader
        of many large objects passes one buffer for all: a fresh block of megabytes per
        object costs a page fault per 4 KiB once the allocator has given it back."""
        return memoryview(self.get(key))

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; removing a missing object is not an error."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; returns how many."""
        keys = [info.key for info in self.list(prefix)]
        for key in keys:
            self.delete(key)
        return len(keys)

    def check_writable(self) -> None:
        """Raise a clear error now rather than half-way through a backup."""
        probe = ".pgdr-write-test"
        self.put(probe, b"ok")
        self.delete(probe)
