"""The digest of every file of an archive stream, computed on a thread of its own.

Where an archive is read as one stream (``pg_basebackup``'s, or a restore that checks every
file), hashing is a sequential per-file cost; ``hashlib`` releases the GIL, so a dedicated
thread lets it overlap the pipe reads, tar parsing and disk writes of the main thread and the
sealing workers.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from pgdr.backup.digest import Data, FileDigest

_END = object()


class HashThread:
    """Feed ``start(name, digest)``, ``update(data)``..., ``end()`` per file; results (hex
    digests) via ``done``."""

    def __init__(self, done: Callable[[str, str], None], depth: int = 16) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._done = done
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pgdr-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        current: Any = None
        name = ""
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue
            try:
                if isinstance(item, tuple):
                    name, current = item
                elif item is _END:
                    self._done(name, current.hexdigest())
                else:
                    current.update(item)
            except BaseException as exc:  # reported by close()
                self._error = exc

    def start(self, name: str, digest: FileDigest) -> None:
        self._queue.put((name, digest))

    def update(self, data: Data) -> None:
        self._queue.put(data)

    def end(self) -> None:
        self._queue.put(_END)

    def close(self) -> None:
        """Wait for every queued file to be hashed; re-raise an error from ``done``."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop without waiting for results (after a failure elsewhere)."""
        self._error = self._error or RuntimeError("abandoned")
        self._queue.put(None)
        self._thread.join()
