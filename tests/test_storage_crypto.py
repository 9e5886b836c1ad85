"""Local object store and the sealing envelope (S3 is tested against SeaweedFS elsewhere)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from pgdr.backup.chunks import READ_AHEAD, read_ahead
from pgdr.core.errors import ConfigError
from pgdr.core.memory import keep_freed_memory
from pgdr.crypto import (
    CorruptObject,
    DataKey,
    MasterKey,
    load_master_key,
    open_sealed,
    open_sealed_pieces,
    seal,
)
from pgdr.crypto.keys import MissingMasterKey, generate_key_text
from pgdr.storage import LocalStore, ObjectNotFound, open_store


def test_local_store_roundtrip_and_listing(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "repo"))
    assert isinstance(store, LocalStore)
    store.put("backups/b1/chunks/000001", b"one")
    store.put("backups/b1/manifest.json", b"{}")
    store.put("wal/000000010000000000000001", b"w")
    assert store.get("backups/b1/chunks/000001") == b"one"
    assert [i.key for i in store.list("backups/")] == [
        "backups/b1/chunks/000001",
        "backups/b1/manifest.json",
    ]
    assert store.delete_prefix("backups/b1/") == 2
    assert not (tmp_path / "repo" / "backups").exists()
    with pytest.raises(ObjectNotFound, match="missing"):
        store.get("backups/b1/manifest.json")
    with pytest.raises(ValueError, match="invalid object key"):
        store.put("../escape", b"x")


def test_interrupted_write_leaves_no_object(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".tmp-123").write_bytes(b"half")
    assert list(store.list()) == []
    assert store.clean_temporary() == 1


def test_seal_binds_name_and_detects_damage() -> None:
    key = DataKey.generate()
    sealed = seal(key, "chunk-1", b"hello" * 1000)
    assert len(sealed) < 5000  # compressed
    assert open_sealed(key, "chunk-1", sealed) == b"hello" * 1000
    with pytest.raises(CorruptObject, match="chunk-2 is damaged"):
        open_sealed(key, "chunk-2", sealed)
    flipped = bytearray(sealed)
    flipped[-20] ^= 1
    with pytest.raises(CorruptObject, match="authentication failed"):
        open_sealed(key, "chunk-1", bytes(flipped))
    with pytest.raises(CorruptObject, match="truncated"):
        open_sealed(key, "chunk-1", sealed[:10])
    with pytest.raises(CorruptObject):
        open_sealed(DataKey.generate(), "chunk-1", sealed)


def test_objects_are_read_and_opened_into_reused_buffers(tmp_path: Path) -> None:
    """A large object is read into the caller's buffer when it fits (else whole, as get does),
    and opened with its body decrypted into the caller's buffer when that is large enough;
    either way the bytes are the object's, and damage is found as without buffers."""
    store, key = LocalStore(tmp_path), DataKey.generate()
    plain = os.urandom(300_000)  # does not compress: the body is as large as the data
    for compress in (True, False):
        sealed = seal(key, "chunk-1", plain, compress=compress)
        store.put("c", sealed)
        roomy, cramped = bytearray(len(sealed) + 1), bytearray(10)
        read = store.get_into("c", roomy)
        assert read.obj is roomy and read == sealed
        assert store.get_into("c", cramped) == sealed
        for body in (bytearray(len(sealed)), bytearray(10), None):
            pieces = open_sealed_pieces(key, "chunk-1", read, bytearray(1 << 16), body)
            assert b"".join(bytes(p) for p in pieces) == plain
        flipped = bytearray(sealed)
        flipped[-20] ^= 1
        with pytest.raises(CorruptObject, match="authentication failed"):
            next(open_sealed_pieces(key, "chunk-1", memoryview(flipped), bytearray(10), roomy))
    with pytest.raises(ObjectNotFound, match="missing"):
        store.get_into("nothing", bytearray(10))


def test_freed_memory_is_kept_for_reuse() -> None:
    """The CLI's first step; glibc (Debian's, the CI's) takes it."""
    assert keep_freed_memory()


def test_master_key_sources_and_wrong_key(tmp_path: Path) -> None:
    with pytest.raises(MissingMasterKey):  # never created unless a writer asks
        load_master_key(tmp_path, environ={})
    assert not (tmp_path / "keys").exists()
    key, note = load_master_key(tmp_path, environ={}, generate=True)
    assert note and "Generated a new master key" in note
    path = tmp_path / "keys" / "master.key"
    assert path.stat().st_mode & 0o777 == 0o600
    again, note2 = load_master_key(tmp_path, environ={})
    assert again.key_id == key.key_id and note2 is None
    wrapped = key.wrap(DataKey(b"k" * 32))
    assert key.unwrap(wrapped).key == b"k" * 32
    other = MasterKey(base64.b64decode(generate_key_text()), "test")
    with pytest.raises(ConfigError, match="not the key that protects"):
        other.unwrap(wrapped)
    with pytest.raises(ConfigError, match="not valid base64"):
        load_master_key(tmp_path, environ={"PGDR_ENCRYPTION_KEY": "***"})
    with pytest.raises(ConfigError, match="32 bytes"):
        load_master_key(tmp_path, environ={"PGDR_ENCRYPTION_KEY": base64.b64encode(b"x").decode()})
    from_env, _ = load_master_key(tmp_path, environ={"PGDR_ENCRYPTION_KEY": generate_key_text()})
    assert from_env.origin == "PGDR_ENCRYPTION_KEY"


class _Asked(LocalStore):
    """A local store that notes which objects it was asked to read ahead."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.asked: list[str] = []

    def prefetch(self, key: str) -> None:
        self.asked.append(key)
        super().prefetch(key)


def test_chunks_are_read_ahead_of_their_turn_once_each(tmp_path: Path) -> None:
    """A restore hands its chunks on in order and asks the store to read each one once,
    ``READ_AHEAD`` per worker before its turn; a missing object is no error of the hint (the
    chunk's own read reports it)."""

    def key(index: int) -> str:
        return f"backups/b1/chunks/{index:06d}"

    store = _Asked(tmp_path)
    for index in range(3):
        store.put(key(index), b"sealed")
    repo, manifest = SimpleNamespace(store=store), SimpleNamespace(chunk_key=key)
    seen = []
    for index in read_ahead(repo, manifest, range(20), 2):  # type: ignore[arg-type]
        seen.append(index)
        assert len(store.asked) == min(20, index + 1 + READ_AHEAD * 2)
    assert seen == list(range(20))
    assert store.asked == [key(i) for i in range(20)]
