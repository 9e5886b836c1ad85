"""Ordered parallel processing of a stream of chunks (sealing on backup, opening on restore).

zstd and AES-GCM release the GIL, so a small thread pool keeps both cores busy while the
producer reads the next chunk; at most ``2 * workers`` results are in flight, so memory stays
bounded however large the database is.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(
    func: Callable[[T], R], items: Iterable[T], workers: int | None = None
) -> Iterator[R]:
    """``map(func, items)`` in order, computed by ``workers`` threads with bounded look-ahead."""
    workers = workers or max(1, os.cpu_count() or 1)
    window = 2 * workers
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pgdr-chunk") as pool:
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class Stopped(Protocol):
    """``stopped()``: whether the work should end; ``stopped(seconds)`` waits up to that long
    for it (a sleep that ends at once when the block does)."""

    def __call__(self, timeout: float = 0.0) -> bool: ...


class Background:
    """``work(stopped)`` on a thread of its own, for the length of a ``with`` block.

    The block's end waits for the work and raises what it raised, unless the block itself
    failed: then ``stopped()`` turns true, so the work ends early, and the block's own error is
    the one raised. With ``until_block_ends`` the work is told to stop at every end of the
    block (work that would otherwise run forever, such as a lock's refresh). Ctrl-C during
    that wait stops the work too, and still waits for it, so the caller never lets go of what
    the work uses (a directory's descriptor, a lock) while it runs. The wait is on an event:
    an interrupted ``Thread.join()`` takes a running thread for ended on Python 3.11.
    """

    def __init__(
        self, work: Callable[[Stopped], None], name: str, *, until_block_ends: bool = False
    ) -> None:
        self._work = work
        self._until_block_ends = until_block_ends
        self._stop = threading.Event()
        self._done = threading.Event()
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._work(self._stopped)
        except BaseException as exc:  # raised by the caller's thread (check, __exit__)
            self.failure = exc
        finally:
            self._done.set()

    def _stopped(self, timeout: float = 0.0) -> bool:
        return self._stop.wait(timeout)

    def __enter__(self) -> Background:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        failed = exc[0] is not None
        if failed or self._until_block_ends:
            self._stop.set()
        try:
            self._done.wait()
        except BaseException:
            self._stop.set()
            self._done.wait()
            raise
        if not failed:
            self.check()

    def check(self) -> None:
        """Raise what the work raised, if it failed already."""
        if self.failure is not None:
            raise self.failure
