"""How a manifest fingerprints its stored objects and the files of its archive.

Two schemes, named by ``Manifest.digest_scheme``:

* ``""`` (manifests written before the pieces scheme, and logical dumps): SHA-256 of each
  stored object and of each whole file. A file's SHA-256 is one sequential chain, so a
  parallel backup's workers had to take turns on every large file; without SHA extensions it
  runs at about 0.25 GB/s per core, and it was the slowest step of a backup.
* ``"xxh3-128-pieces"`` (base backups since): XXH3-128 of each stored object; a file's digest
  is the XXH3-128 of the XXH3-128 digests of its *pieces*, a piece being the part of the file
  inside one chunk of the archive stream (chunk boundaries are at multiples of the manifest's
  ``chunk_size``). Every worker hashes the pieces of its own chunk, in parallel, and anyone
  holding the file and the manifest can recompute the same value. XXH3 runs at about 5 GB/s
  per core here, 20 times SHA-256.

These digests are not what makes a backup trustworthy against an attacker: every stored object
is AES-256-GCM authenticated (bound to its name) and the manifest carries an HMAC, both keyed by
the master key. The digests catch accidents and pgdr's own mistakes end to end (the bytes read
from the data directory are the bytes a restore writes) and tell a delta restore which files
already hold the right bytes; like PostgreSQL's own ``backup_manifest`` (CRC-32C by default) and
pgBackRest (SHA-1), that needs a strong checksum, not a cryptographic one. A 128-bit one leaves
an accidental match at 2^-128.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path

import xxhash

Data = bytes | bytearray | memoryview

LEGACY = ""
PIECES = "xxh3-128-pieces"
SCHEMES = (LEGACY, PIECES)
_PREFIX = b"pgdr-file-v1:"
READ = 1 << 20


def object_digest(scheme: str, data: Data) -> str:
    """The digest of one stored (sealed) object under ``scheme``."""
    if scheme == LEGACY:
        return hashlib.sha256(data).hexdigest()
    return xxhash.xxh3_128_hexdigest(data)


def piece_digest(data: Data) -> bytes:
    """The digest of one piece of a file (``PIECES`` scheme)."""
    return xxhash.xxh3_128_digest(data)


def piece_hasher() -> xxhash.xxh3_128:
    """A digest of one piece fed in parts: ``update()``, then ``digest()``."""
    return xxhash.xxh3_128()


def combine(pieces: Iterable[bytes]) -> str:
    """A file's digest from its pieces' digests, in file order (``PIECES`` scheme)."""
    return xxhash.xxh3_128_hexdigest(_PREFIX + b"".join(pieces))


class FileDigest:
    """A file's digest, fed its bytes in order; ``offset`` is where they start in the archive."""

    def __init__(self, scheme: str, offset: int, chunk_size: int) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown digest scheme {scheme!r}")
        self.scheme = scheme
        self._legacy = hashlib.sha256()
        self._position, self._chunk_size = offset, chunk_size
        self._piece = piece_hasher()
        self._pieces: list[bytes] = []
        self._open = False  # the current piece has bytes

    def update(self, data: Data) -> None:
        if self.scheme == LEGACY:
            self._legacy.update(data)
            return
        view = memoryview(data).cast("B")
        while view:
            room = self._chunk_size - self._position % self._chunk_size
            part, view = view[:room], view[room:]
            self._piece.update(part)
            self._position += len(part)
            self._open = True
            if self._position % self._chunk_size == 0:
                self._close_piece()

    def _close_piece(self) -> None:
        self._pieces.append(self._piece.digest())
        self._piece = piece_hasher()
        self._open = False

    def hexdigest(self) -> str:
        if self.scheme == LEGACY:
            return self._legacy.hexdigest()
        pieces = list(self._pieces)
        if self._open or not pieces:  # the last piece, or the one (empty) piece of an empty file
            pieces.append(self._piece.digest())
        return combine(pieces)


class PieceDigests:
    """The digests of the pieces of many files (their parts in each chunk), added by any
    thread in any order; a file's digest combines them in file order (``PIECES`` scheme)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pieces: dict[str, dict[int, bytes]] = {}

    def add(self, path: str, at: int, digest: bytes) -> None:
        """The digest of ``path``'s piece that starts ``at`` bytes into the file."""
        with self._lock:
            self._pieces.setdefault(path, {})[at] = digest

    def of(self, path: str) -> str:
        pieces = self._pieces.get(path) or {0: piece_digest(b"")}  # an empty file
        return combine(pieces[at] for at in sorted(pieces))


def digest_of_file(path: Path, digest: FileDigest) -> str:
    """``digest`` (fresh, from ``Manifest.file_digest``) fed the whole of ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return digest_of_descriptor(fd, digest)
    finally:
        os.close(fd)


def digest_of_descriptor(fd: int, digest: FileDigest) -> str:
    """``digest`` fed the whole of the open file ``fd`` (read from its start)."""
    offset = 0
    while block := os.pread(fd, READ, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()
