"""An exclusive lock on a store, for one writer at a time.

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

import filelock

from pgdr.errors import ConfigError, RuntimeFailure
from pgdr.storage.base import ObjectNotFound, ObjectStore
from pgdr.storage.local import LocalStore
from pgdr.storage.s3 import S3Store

LOCAL_LOCK_NAME = ".pgdr-lock"


class LockBusy(RuntimeFailure):
    """Another live writer holds the lock; ``holder`` is what it wrote (None if unknown)."""

    def __init__(self, holder: bytes | None) -> None:
        super().__init__("The lock is held by another process.")
        self.holder = holder


class HeldLock:
    """What the holder may do with its lock: refresh its description."""

    def __init__(self, store: ObjectStore, key: str, etag: str | None) -> None:
        self.store = store
        self.key = key
        self.etag = etag

    def refresh(self, data: bytes) -> None:
        if isinstance(self.store, S3Store) and self.etag is not None:
            etag = self.store.replace_if(self.key, data, self.etag)
            if etag is None:
                raise RuntimeFailure(
                    f"The lock on {self.store.url} was taken over by another process."
                )
            self.etag = etag
        else:
            self.store.put(self.key, data)


@contextmanager
def hold(
    store: ObjectStore, key: str, data: bytes, is_stale: Callable[[bytes], bool]
) -> Iterator[HeldLock]:
    """Hold the store's lock while the block runs; :class:`LockBusy` when another does."""
    if isinstance(store, LocalStore):
        with _hold_local(store, key, data) as held:
            yield held
    elif isinstance(store, S3Store):
        etag = _acquire_s3(store, key, data, is_stale)
        held = HeldLock(store, key, etag)
        try:
            yield held
        finally:
            with contextlib.suppress(RuntimeFailure):  # unreachable: it goes stale by itself
                store.delete_if(key, held.etag or "")
    else:
        raise ConfigError(f"The store {store.url} offers no exclusive lock.")


@contextmanager
def _hold_local(store: LocalStore, key: str, data: bytes) -> Iterator[HeldLock]:
    store.root.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(Path(store.root) / LOCAL_LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise LockBusy(_read(store, key)) from None
    try:
        store.put(key, data)
        yield HeldLock(store, key, None)
    finally:
        try:
            store.delete(key)
        finally:
            lock.release()


def _acquire_s3(store: S3Store, key: str, data: bytes, is_stale: Callable[[bytes], bool]) -> str:
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
        raise LockBusy(_read(store, key))
    etag = store.create(key, data)
    if etag is None:
        raise LockBusy(_read(store, key))
    return etag


def _read(store: ObjectStore, key: str) -> bytes | None:
    try:
        return store.get(key)
    except ObjectNotFound:
        return None
