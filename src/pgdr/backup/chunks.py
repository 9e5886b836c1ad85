"""Reading a backup's chunks back: fetched, checked against the manifest, and opened.

Every check names what is wrong in terms a person can act on: which chunk of which backup, why
(missing, truncated, checksum, authentication) and which files of the data directory it holds.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from pgdr.backup.manifest import FileEntry, Manifest
from pgdr.backup.repository import Repository
from pgdr.core.errors import RuntimeFailure
from pgdr.crypto import CorruptObject, DataKey, open_sealed, open_sealed_pieces
from pgdr.storage import ObjectNotFound

PIECE = 1 << 20  # how much of a chunk is opened at a time (the size of its buffer)
READ_AHEAD = 4  # chunks read ahead per worker (read_ahead); a chunk stores 0.4 MB of pgbench


class Scratch:
    """One thread's buffers for reading chunks, reused for every chunk it reads.

    A chunk of data that does not compress (vectors) is megabytes as stored and decrypted; a
    fresh object of that size per chunk costs a page fault per 4 KiB each time the allocator
    has given the last one back to the system: a cold 2 GB restore of vectors took 4.98 s
    with them and 3.10 s without, on two cores (docs/backups.md).
    """

    def __init__(self) -> None:
        self.pieces = bytearray(PIECE)  # what a chunk is opened into, a piece at a time
        self.sealed = bytearray()  # the chunk as stored
        self.body = bytearray()  # the chunk decrypted, still compressed

    def fit(self, stored_size: int) -> None:
        """Make room for a chunk of ``stored_size`` bytes as stored (and one more byte, so
        that a longer object does not fit and shows as one)."""
        if len(self.sealed) <= stored_size:
            self.sealed = bytearray(stored_size + 1)
            self.body = bytearray(stored_size)


_THREADS = threading.local()


def thread_scratch() -> Scratch:
    """The calling thread's :class:`Scratch` (made at its first chunk, kept while it runs)."""
    found: Scratch | None = getattr(_THREADS, "scratch", None)
    if found is None:
        found = _THREADS.scratch = Scratch()
    return found


class DamagedBackup(RuntimeFailure):
    """A chunk or file of a backup failed its checks."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


def files_in_chunk(manifest: Manifest, index: int) -> list[str]:
    """The data-directory files whose bytes lie (partly) in chunk ``index``."""
    return [f.path for f in manifest.files if f.kind == "file" and index in manifest.chunks_of(f)]


def damaged_chunk(manifest: Manifest, index: int, reason: str, limit: int = 5) -> DamagedBackup:
    names = files_in_chunk(manifest, index)
    shown = names[:limit] + ([f"and {len(names) - limit} more"] if len(names) > limit else [])
    files = ", ".join(shown) or "archive metadata only"
    return DamagedBackup(
        f"Chunk {index + 1} of backup {manifest.id} is damaged ({reason}); it holds: {files}.",
        reason,
    )


def fetch_sealed(
    repo: Repository, manifest: Manifest, index: int, scratch: Scratch | None = None
) -> bytes | memoryview:
    """One chunk as stored, checked against the manifest (present, size, digest); read into
    ``scratch`` when given (a view of it, valid until its next chunk)."""
    entry = manifest.chunks[index]
    key = manifest.chunk_key(index)
    try:
        if scratch is None:
            sealed: bytes | memoryview = repo.store.get(key)
        else:
            scratch.fit(entry.stored_size)
            sealed = repo.store.get_into(key, scratch.sealed)
    except ObjectNotFound as exc:
        raise damaged_chunk(manifest, index, "it is missing") from exc
    if len(sealed) != entry.stored_size or manifest.object_digest(sealed) != entry.digest:
        reason = "it is truncated" if len(sealed) < entry.stored_size else "its checksum differs"
        raise damaged_chunk(manifest, index, reason)
    return sealed


def read_ahead(
    repo: Repository, manifest: Manifest, indexes: Sequence[int], workers: int | None
) -> Iterator[int]:
    """``indexes`` as they are, each chunk's object asked for (``ObjectStore.prefetch``)
    ``READ_AHEAD`` chunks per worker before its turn, so that a cold disk serves several reads
    at once instead of one after another: feed it to ``parallel_map``."""
    ahead = READ_AHEAD * max(1, workers or os.cpu_count() or 1)
    for index in indexes[:ahead]:
        repo.store.prefetch(manifest.chunk_key(index))
    for n, index in enumerate(indexes):
        if n + ahead < len(indexes):
            repo.store.prefetch(manifest.chunk_key(indexes[n + ahead]))
        yield index


def fetch_chunk(repo: Repository, manifest: Manifest, data_key: DataKey, index: int) -> bytes:
    """One chunk, checked (present, size, digest, authentication) and opened (read and
    decrypted in the thread's :func:`thread_scratch`: only the opened chunk is a new object)."""
    scratch = thread_scratch()
    sealed = fetch_sealed(repo, manifest, index, scratch)
    try:
        plain = open_sealed(data_key, manifest.chunk_key(index), sealed, scratch.body)
    except CorruptObject as exc:
        raise damaged_chunk(manifest, index, "it fails authentication") from exc
    if len(plain) != manifest.chunks[index].size:
        raise damaged_chunk(manifest, index, "it has the wrong size")
    return plain


def fetch_chunk_pieces(
    repo: Repository, manifest: Manifest, data_key: DataKey, index: int, scratch: Scratch
) -> Iterator[memoryview]:
    """Like :func:`fetch_chunk`, in pieces decompressed into ``scratch`` (each valid until the
    next is asked for); authenticated before the first piece."""
    sealed = fetch_sealed(repo, manifest, index, scratch)
    name, total = manifest.chunk_key(index), 0
    try:
        for piece in open_sealed_pieces(data_key, name, sealed, scratch.pieces, scratch.body):
            total += len(piece)
            yield piece
    except CorruptObject as exc:
        raise damaged_chunk(manifest, index, "it fails authentication") from exc
    if total != manifest.chunks[index].size:
        raise damaged_chunk(manifest, index, "it has the wrong size")


def read_file(repo: Repository, manifest: Manifest, data_key: DataKey, entry: FileEntry) -> bytes:
    """One file of the backup, cut out of the chunks that hold it (each checked and opened)."""
    data, scratch = bytearray(), Scratch()
    for index in manifest.chunks_of(entry):
        position = index * manifest.chunk_size
        for piece in fetch_chunk_pieces(repo, manifest, data_key, index, scratch):
            end = position + len(piece)
            low, high = max(entry.offset, position), min(entry.offset + entry.size, end)
            if low < high:
                data += piece[low - position : high - position]
            position = end
    return bytes(data)


@contextlib.contextmanager
def private_dir(prefix: str) -> Iterator[Path]:
    """A 0700 temporary directory for opened (plaintext) chunks or WAL, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        path = Path(tmp)
        path.chmod(0o700)
        yield path
