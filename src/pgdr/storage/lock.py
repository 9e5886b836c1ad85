"""The exclusive writer lock each store offers (``ObjectStore.hold_lock``).

Local store: an ``flock`` (via ``filelock``) on ``<root>/.pgdr-lock``, held for the operation;
the kernel drops it when the process dies, so a local lock is never stale. The holder's
description is also written to ``key`` so others can say who holds it.

S3: the lock *is* the object ``key``, created with ``If-None-Match: *`` (exactly one of any
number of concurrent creators wins). A lock judged stale by the caller is taken over by deleting
it with ``If-Match`` its ETag and creating it again, so two processes taking over the same stale
lock cannot both win; refreshes replace it with ``If-Match`` too, so a writer whose lock was
taken over learns it instead of overwriting the new holder's. A store that ignores conditional
writes cannot keep writers apart: it is refused with one sentence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import filelock

from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.storage.base import HeldLock, LockBusy, LockLost, ObjectNotFound, ObjectStore

LOCAL_LOCK_NAME = ".pgdr-lock"


class ConditionalStore(Protocol):
    """What a store needs to offer for a lock made of conditional writes."""

    url: str

    def get(self, key: str) -> bytes: ...
    def create(self, key: str, data: bytes) -> str | None: ...
    def replace_if(self, key: str, data: bytes, etag: str) -> str | None: ...
    def get_tagged(self, key: str) -> tuple[bytes, str]: ...
    def delete_if(self, key: str, etag: str) -> bool: ...
    def conditional_writes(self) -> bool: ...


class ConditionalLock(HeldLock):
    """A lock that is the object itself: refreshed only while it is still ours."""

    def __init__(self, store: ConditionalStore, key: str, etag: str) -> None:
        self.conditional = store
        self.key = key
        self.etag = etag  # the holder's description is the lock: no separate store object

    def refresh(self, data: bytes) -> None:
        etag = self.conditional.replace_if(self.key, data, self.etag)
        if etag is None:
            raise LockLost(f"The lock on {self.conditional.url} was taken over by another process.")
        self.etag = etag


@contextmanager
def hold_with_flock(store: ObjectStore, path: Path, key: str, data: bytes) -> Iterator[HeldLock]:
    """Hold an ``flock`` on ``path`` and describe the holder under ``key``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(path, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise LockBusy(_read(store.get, key)) from None
    try:
        store.put(key, data)
        yield HeldLock(store, key)
    finally:
        try:
            store.delete(key)
        finally:
            lock.release()


@contextmanager
def hold_with_conditional_writes(
    store: ConditionalStore, key: str, data: bytes, is_stale: Callable[[bytes], bool]
) -> Iterator[HeldLock]:
    """Hold the lock object ``key``, created (or taken over) with conditional writes."""
    held = ConditionalLock(store, key, _acquire(store, key, data, is_stale))
    try:
        yield held
    finally:
        with contextlib.suppress(RuntimeFailure):  # unreachable: it goes stale by itself
            store.delete_if(key, held.etag)


def _acquire(
    store: ConditionalStore, key: str, data: bytes, is_stale: Callable[[bytes], bool]
) -> str:
    if not store.conditional_writes():
        raise ConfigError(
            f"The S3 store {store.url} ignores conditional writes (If-None-Match), so pgdr "
            "cannot keep two writers apart there; use a store that honours them."
        )
    etag = store.create(key, data)
    if etag is not None:
        return etag
    try:
        current, current_tag = store.get_tagged(key)
    except ObjectNotFound:  # released meanwhile: one more try, still exclusive
        current, current_tag = b"", ""
    if current and not is_stale(current):
        raise LockBusy(current)
    if current and not store.delete_if(key, current_tag):
        raise LockBusy(_read(store.get, key))
    etag = store.create(key, data)
    if etag is None:
        raise LockBusy(_read(store.get, key))
    return etag


def _read(get: Callable[[str], bytes], key: str) -> bytes | None:
    try:
        return get(key)
    except ObjectNotFound:
        return None
