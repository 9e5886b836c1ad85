"""How the C allocator treats the large blocks pgdr frees.

A backup or a restore moves data in chunks of megabytes: a chunk read, compressed or
decompressed, encrypted or decrypted is a new object of that size, freed a moment later. glibc
serves such blocks with ``mmap`` and gives them back at ``free`` (or trims them off its heap), so
the next chunk's block is fresh memory again: a page fault and a page cleared for every 4 KiB
touched. On data that does not compress (vectors) that was most of a 2 GB backup's CPU on two
cores (8.5 s against 5.7 s with the memory kept; docs/backups.md).

:func:`keep_freed_memory` asks glibc to keep freed blocks of up to ``KEEP`` for reuse instead.
The memory a process holds then stays at what it needed at its peak (a few chunks per worker),
as a long-running service's would. Elsewhere (another C library, no ``mallopt``) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes

M_TRIM_THRESHOLD = -1  # glibc's malloc.h: free memory at the top of the heap kept up to this
M_MMAP_THRESHOLD = -3  # blocks from this size up are mmap'ed (and unmapped when freed)
KEEP = 32 << 20  # glibc's largest on 64 bits; chunks are 8 MiB unless configured larger
TRIM = 8 * KEEP


def keep_freed_memory() -> bool:
    """Keep freed blocks of up to ``KEEP`` for reuse; whether the C library took it."""
    with contextlib.suppress(OSError, AttributeError):
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs with
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        return bool(mallopt(M_MMAP_THRESHOLD, KEEP)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM))
    return False
