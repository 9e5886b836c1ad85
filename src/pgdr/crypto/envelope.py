"""Sealing one object: zstd compression, then AES-256-GCM bound to the object's logical name.

Sealed format (version 1)::

    b"PGDR" | version (1 byte) | flags (1 byte: bit 0 = zstd) | nonce (12 bytes) | ciphertext+tag

The associated data is the header plus the object's logical name, so a chunk moved to another
name, a flipped bit or a truncated object all fail authentication, which is reported by name.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pgdr.core.errors import RuntimeFailure
from pgdr.crypto.keys import DataKey

MAGIC = b"PGDR"
VERSION = 1
FLAG_ZSTD = 1
HEADER_LEN = len(MAGIC) + 2 + 12
TAG_LEN = 16  # AES-GCM's authentication tag, after the ciphertext
# zstd's fastest level: on pgbench pages and on vectors it stores no more than level 3 and
# compresses 1.3-1.6 times as fast (docs/backups.md); ``pgdr backup --compress-level`` changes it
DEFAULT_LEVEL = 1


class CorruptObject(RuntimeFailure):
    """An object failed authentication or decompression: damaged, truncated, or not ours."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} is damaged: {reason}.")
        self.name = name


def derive_subkey(key: DataKey, purpose: str) -> bytes:
    """An independent 256-bit key for ``purpose`` (e.g. manifest signing) from a data key."""
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"pgdr/" + purpose.encode()).derive(key.key)


def seal(
    key: DataKey,
    name: str,
    plaintext: bytes | bytearray,
    level: int = DEFAULT_LEVEL,
    compress: bool = True,
) -> bytes:
    flags = FLAG_ZSTD if compress else 0
    body = zstandard.ZstdCompressor(level=level).compress(plaintext) if compress else plaintext
    nonce = secrets.token_bytes(12)
    header = MAGIC + bytes([VERSION, flags]) + nonce
    return header + AESGCM(key.key).encrypt(nonce, body, header + name.encode())


def open_sealed(
    key: DataKey, name: str, sealed: bytes | memoryview, body: bytearray | None = None
) -> bytes:
    """The plaintext of ``sealed``, decrypted into ``body`` first if it is large enough."""
    body_view, compressed = _authenticate(key, name, sealed, body)
    return _plain(name, body_view, compressed)


def _plain(name: str, body: memoryview, compressed: bool) -> bytes:
    if compressed:
        try:
            return zstandard.ZstdDecompressor().decompress(body)
        except zstandard.ZstdError as exc:
            raise CorruptObject(name, f"it does not decompress ({exc})") from exc
    return bytes(body)


def open_sealed_pieces(
    key: DataKey,
    name: str,
    sealed: bytes | memoryview,
    buffer: bytearray,
    body: bytearray | None = None,
) -> Iterator[memoryview]:
    """Like :func:`open_sealed`, but yields the plaintext in pieces of at most ``len(buffer)``
    bytes, each a view of ``buffer`` (valid until the next piece is asked for).

    The whole object is authenticated before the first piece is returned. Decompressing into one
    reused buffer keeps the data in the CPU cache for whoever consumes it (writes, hashes it)
    and allocates nothing per piece: fresh 1 MiB objects cost a page fault per 4 KiB, which was
    most of a restore's system time. For the same reason the object is decrypted into ``body``
    when it is large enough (grown by the caller, reused for every object).
    """
    plain, compressed = _authenticate(key, name, sealed, body)
    if not compressed:
        for start in range(0, len(plain), len(buffer)):
            yield plain[start : start + len(buffer)]
        return
    out = memoryview(buffer)
    try:
        with zstandard.ZstdDecompressor().stream_reader(plain, read_size=len(buffer)) as reader:
            while count := reader.readinto(buffer):
                yield out[:count]
    except zstandard.ZstdError as exc:
        raise CorruptObject(name, f"it does not decompress ({exc})") from exc


def _authenticate(
    key: DataKey, name: str, sealed: bytes | memoryview, into: bytearray | None = None
) -> tuple[memoryview, bool]:
    """The decrypted (still compressed) body, in ``into`` if it is large enough, and whether it
    is compressed."""
    nonce, aad, data = _parts(name, sealed)
    compressed = bool(aad[5] & FLAG_ZSTD)
    try:
        if into is not None and len(into) >= len(data) - TAG_LEN:
            view = memoryview(into)[: len(data) - TAG_LEN]
            AESGCM(key.key).decrypt_into(nonce, data, aad, view)
            return view, compressed
        return memoryview(AESGCM(key.key).decrypt(nonce, data, aad)), compressed
    except InvalidTag:
        raise CorruptObject(
            name, "authentication failed (altered, truncated or misplaced)"
        ) from None


def _parts(name: str, sealed: bytes | memoryview) -> tuple[bytes, bytes, memoryview]:
    """A sealed object's nonce, associated data (its header and ``name``) and ciphertext."""
    if len(sealed) < HEADER_LEN + TAG_LEN or bytes(sealed[:4]) != MAGIC:
        raise CorruptObject(name, "it is truncated or not a pgdr object")
    if sealed[4] != VERSION:
        raise CorruptObject(name, f"unknown format version {sealed[4]}")
    header = bytes(sealed[:HEADER_LEN])
    return header[6:], header + name.encode(), memoryview(sealed)[HEADER_LEN:]


def sign(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def verify_signature(key: bytes, payload: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(key, payload), signature)
