"""The WAL part of a repository: sealed segments, timeline histories, partials, and state.

Layout under the repository root::

    wal/keyring.json                   the WAL data key wrapped by the master key, signed
                                       (``pgdr key rotate`` re-wraps it with the backups')
    wal/history/TTTTTTTT.history       timeline histories
    wal/TTTTTTTT/<segment>             completed segments (and ``.backup`` history files)
    wal/TTTTTTTT/<segment>.partial.OOOOOOOO   the segment being written: its bytes from offset
                                       O on, one piece per upload of what is new
    wal/state/<name>.json              what the streamer / archiver last did (sealed)

Every object is sealed (zstd + AES-256-GCM) under its own key name with one data key per
repository, so a segment moved, truncated or altered fails authentication and is named. The
keyring also records the database system identifier and segment size: WAL of another cluster is
refused instead of silently mixed in.

A repository's archive is reached through :func:`repository_archive` (the repository's store,
master key and system identifier together); nothing else assembles :meth:`WalArchive.open`.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pgdr.backup.repository import WAL_KEYRING, Repository
from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.crypto import (
    CorruptObject,
    DataKey,
    MasterKey,
    WrappedKey,
    derive_subkey,
    open_sealed,
    seal,
    sign,
    verify_signature,
)
from pgdr.storage import ObjectNotFound, ObjectStore
from pgdr.wal.names import (
    is_backup_history,
    is_history,
    is_partial,
    is_segment,
    parse_segment,
    partial_offset,
    timeline_of,
)

PREFIX = "wal/"
KEYRING = WAL_KEYRING
STATE_PREFIX = "wal/state/"
XLP_LONG_HEADER = struct.Struct("<HHIQIIQII")  # magic, info, tli, pageaddr, rem_len, pad, ...
PARTIAL_LEVEL = 1


def object_key(name: str) -> str:
    """Where a WAL file named as PostgreSQL names it lives in the repository."""
    if is_history(name):
        return f"{PREFIX}history/{name}"
    if is_segment(name) or is_partial(name) or is_backup_history(name):
        return f"{PREFIX}{name[:8]}/{name}"
    raise ConfigError(f"{name!r} is not the name of a WAL file.")


def name_of_key(key: str) -> str | None:
    """The WAL file name stored under ``key`` (None for keys that hold no WAL file)."""
    if not key.startswith(PREFIX) or key.startswith(STATE_PREFIX) or key == KEYRING:
        return None
    name = key.rsplit("/", 1)[-1]
    if is_history(name) or is_segment(name) or is_partial(name) or is_backup_history(name):
        return name
    return None


@dataclass(frozen=True)
class SegmentHeader:
    """What the long page header at the start of every segment says about it."""

    timeline: int
    pageaddr: int
    system_identifier: int
    segment_size: int


def read_segment_header(data: bytes) -> SegmentHeader | None:
    """The header of a segment's first page, or None when the file holds no valid header."""
    if len(data) < XLP_LONG_HEADER.size:
        return None
    _magic, info, tli, pageaddr, _rem, _pad, sysid, seg_size, _blcksz = XLP_LONG_HEADER.unpack_from(
        data
    )
    if not info & 0x0002 or seg_size == 0:  # XLP_LONG_HEADER
        return None
    return SegmentHeader(tli, pageaddr, sysid, seg_size)


@dataclass(frozen=True)
class PushResult:
    name: str
    key: str
    stored: bool  # False when the identical file was already there
    bytes_in: int
    bytes_stored: int


class WalArchive:
    """Sealed WAL in one repository; one instance per process."""

    def __init__(self, store: ObjectStore, data_key: DataKey, keyring: dict[str, Any]) -> None:
        self.store = store
        self.key = data_key
        self.system_identifier = int(keyring["system_identifier"])
        self.segment_size = int(keyring["segment_size"])

    # ----- keyring ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        store: ObjectStore,
        master: MasterKey,
        *,
        system_identifier: int | None = None,
        segment_size: int | None = None,
    ) -> WalArchive:
        """The repository's WAL archive; created when ``system_identifier`` is given and none is.

        When both are given and the archive exists, they must match it.
        """
        try:
            raw = store.get(KEYRING)
        except ObjectNotFound:
            if system_identifier is None or segment_size is None:
                raise RuntimeFailure(
                    f"The repository {store.url} holds no WAL yet: start `pgdr wal stream` "
                    "or archiving first."
                ) from None
            cls._create(store, master, system_identifier, segment_size)
            raw = store.get(KEYRING)  # whoever wrote last wins; everyone uses that key
        data_key, keyring = cls._load(store, master, raw)
        archive = cls(store, data_key, keyring)
        if system_identifier is not None and system_identifier != archive.system_identifier:
            raise ConfigError(
                f"The repository {store.url} holds WAL of database system "
                f"{archive.system_identifier}, not of this server ({system_identifier}); "
                "use a repository per cluster."
            )
        if segment_size is not None and segment_size != archive.segment_size:
            raise ConfigError(
                f"The repository's WAL has {archive.segment_size}-byte segments, "
                f"this server writes {segment_size}-byte segments."
            )
        return archive

    @staticmethod
    def _create(store: ObjectStore, master: MasterKey, sysid: int, seg_size: int) -> None:
        data_key = DataKey.generate()
        body = {
            "version": 1,
            "system_identifier": str(sysid),
            "segment_size": seg_size,
            "wal_key": master.wrap(data_key).as_dict(),
            "created_at": time.time(),
        }
        WalArchive._write_keyring(store, data_key, body)

    @staticmethod
    def _load(store: ObjectStore, master: MasterKey, raw: bytes) -> tuple[DataKey, dict[str, Any]]:
        try:
            doc = json.loads(raw)
            body: dict[str, Any] = doc["body"]
            wrapped = WrappedKey.from_dict(body["wal_key"])
            signature = str(doc["signature"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptObject(KEYRING, "it is not a pgdr WAL keyring") from exc
        data_key = master.unwrap(wrapped, what=f"the WAL in {store.url}")
        payload = json.dumps(body, sort_keys=True).encode()
        if not verify_signature(derive_subkey(data_key, "wal-keyring"), payload, signature):
            raise CorruptObject(KEYRING, "its signature does not match (altered)")
        return data_key, body

    @classmethod
    def rewrap_keyring(cls, store: ObjectStore, old: MasterKey, new: MasterKey) -> str:
        """Re-wrap the WAL data key under ``new`` (no WAL rewritten) and check ``new`` opens it.

        Returns "rewrapped", "already" (wrapped by ``new`` before) or "absent" (no WAL).
        """
        try:
            raw = store.get(KEYRING)
        except ObjectNotFound:
            return "absent"
        outcome = "already"
        try:
            current = str(json.loads(raw)["body"]["wal_key"]["master_key_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptObject(KEYRING, "it is not a pgdr WAL keyring") from exc
        if current != new.key_id:
            data_key, body = cls._load(store, old, raw)
            body["wal_key"] = new.wrap(data_key).as_dict()
            cls._write_keyring(store, data_key, body)
            outcome = "rewrapped"
        cls._load(store, new, store.get(KEYRING))
        return outcome

    @staticmethod
    def _write_keyring(store: ObjectStore, data_key: DataKey, body: dict[str, Any]) -> None:
        payload = json.dumps(body, sort_keys=True).encode()
        signature = sign(derive_subkey(data_key, "wal-keyring"), payload)
        store.put(KEYRING, json.dumps({"body": body, "signature": signature}).encode())

    # ----- files ------------------------------------------------------------------------------
    def check_segment(self, name: str, data: bytes) -> None:
        """Refuse a segment that is not what its name says or belongs to another cluster."""
        header = read_segment_header(data)
        if header is None:
            if any(data[:4096]):
                raise ConfigError(f"{name} does not start with a WAL page header.")
            return  # an all-zero (never written) partial segment
        if header.system_identifier != self.system_identifier:
            raise ConfigError(
                f"{name} belongs to database system {header.system_identifier}, but this "
                f"repository holds WAL of system {self.system_identifier}."
            )
        base = name[:24]
        expected = parse_segment(base, self.segment_size).start_lsn(self.segment_size)
        if header.pageaddr != expected:
            raise ConfigError(f"{name} holds the WAL of another position than its name says.")

    def push(self, name: str, data: bytes, *, verify_same: bool = True) -> PushResult:
        """Store one WAL file; the identical file twice is fine, a different one is refused."""
        key = object_key(name)
        if is_segment(name) or (is_partial(name) and partial_offset(name) == 0):
            self.check_segment(name, data)
        if not is_partial(name) and verify_same and self.store.exists(key):
            existing = self.get(name)
            if existing != data:
                raise RuntimeFailure(
                    f"The repository already holds a different {name}; refusing to replace it "
                    "(two clusters archiving into one repository?)."
                )
            return PushResult(name, key, False, len(data), 0)
        level = PARTIAL_LEVEL if is_partial(name) else 3
        sealed = seal(self.key, key, data, level=level)
        self.store.put(key, sealed)
        return PushResult(name, key, True, len(data), len(sealed))

    def get(self, name: str) -> bytes:
        key = object_key(name)
        return open_sealed(self.key, key, self.store.get(key))

    def partial_pieces(self, segment: str) -> list[tuple[int, str]]:
        """(offset, key) of every stored piece of ``segment``'s partial, by offset."""
        prefix = f"{PREFIX}{segment[:8]}/{segment}.partial"
        pieces = []
        for info in self.store.list(prefix):
            name = info.key.rsplit("/", 1)[-1]
            if is_partial(name):
                pieces.append((partial_offset(name), info.key))
        return sorted(pieces)

    def get_partial(self, segment: str) -> bytes:
        """The partial segment assembled from its pieces (each authenticated).

        Pieces may overlap (a restarted streamer uploads from 0 again): each one extends what
        is known; a piece that starts past the end (a lost piece) ends the usable data there.
        """
        pieces = self.partial_pieces(segment)
        if not pieces:
            raise ObjectNotFound(f"{segment}.partial is not in the repository.")
        data = bytearray()
        for offset, key in pieces:
            if offset > len(data):
                break
            piece = open_sealed(self.key, key, self.store.get(key))
            if offset + len(piece) > len(data):
                data[offset:] = piece
        return bytes(data)

    def delete_partial(self, segment: str, keep: str | None = None) -> None:
        for _offset, key in self.partial_pieces(segment):
            if keep is None or not key.endswith("/" + keep):
                self.store.delete(key)

    def has_partial(self, segment: str) -> bool:
        return bool(self.partial_pieces(segment))

    def exists(self, name: str) -> bool:
        return self.store.exists(object_key(name))

    def delete(self, name: str) -> None:
        self.store.delete(object_key(name))

    def names(self) -> Iterator[tuple[str, int]]:
        """Every WAL file in the repository with its stored size, in key order."""
        for info in self.store.list(PREFIX):
            name = name_of_key(info.key)
            if name is not None:
                yield name, info.size

    def timelines(self) -> list[int]:
        return sorted({timeline_of(n) for n, _ in self.names() if not is_history(n)})

    # ----- state ------------------------------------------------------------------------------
    def put_state(self, name: str, state: dict[str, Any]) -> None:
        key = f"{STATE_PREFIX}{name}.json"
        self.store.put(key, seal(self.key, key, json.dumps(state).encode()))

    def get_state(self, name: str) -> dict[str, Any] | None:
        key = f"{STATE_PREFIX}{name}.json"
        try:
            raw = self.store.get(key)
        except ObjectNotFound:
            return None
        state: dict[str, Any] = json.loads(open_sealed(self.key, key, raw))
        return state

    def states(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for info in self.store.list(STATE_PREFIX):
            name = info.key[len(STATE_PREFIX) :].removesuffix(".json")
            state = self.get_state(name)
            if state is not None:
                found[name] = state
        return found


def repository_archive(
    repo: Repository, system_identifier: int | None = None, segment_size: int | None = None
) -> WalArchive:
    """The WAL archive of ``repo``; created for a server (and checked against it) when given.

    Reading (no server given) never creates a master key; a writer may, into an empty repository.
    """
    if system_identifier is not None:
        repo.check_system_identifier(str(system_identifier))
    return WalArchive.open(
        repo.store,
        repo.master_key if system_identifier is None else repo.writing_key(),
        system_identifier=system_identifier,
        segment_size=segment_size,
    )
