"""Ordered parallel processing of a stream of chunks (sealing on backup, opening on restore).

zstd and AES-GCM release the GIL, so a small thread pool keeps both cores busy while the
producer reads the next chunk; at most ``2 * workers`` results are in flight, so memory stays
bounded however large the database is.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

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
