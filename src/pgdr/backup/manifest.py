"""The manifest of a base backup: what it holds, and proof that nobody altered it.

A backup exists when ``backups/<id>/manifest.json`` exists; it is written last and atomically.
It lists every chunk (stored size and digest of the stored object) and every file of the data
directory (size, digest, and where its bytes lie in the archive stream, hence which chunks hold
it; ``pgdr.backup.digest`` says how digests are computed), plus the PostgreSQL version, system
identifier, timeline, start/stop LSN and time.

Authentication: an HMAC-SHA256, keyed by a subkey of the backup's data key, over a canonical JSON
encoding of everything except ``wrapped_key`` and ``hmac`` themselves, so ``pgdr key rotate``
can re-wrap the data key without re-signing, and nobody without the master key can forge one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from pgdr.backup.digest import LEGACY, SCHEMES, FileDigest, object_digest
from pgdr.core.errors import RuntimeFailure
from pgdr.crypto import DataKey, MasterKey, WrappedKey, derive_subkey, sign, verify_signature

FORMAT = 1
SIGNING_PURPOSE = "manifest/v1"
BACKUPS = "backups/"
DUMPS = "dumps/"
DUMP_KINDS = ("dump", "schema-dump", "export")  # logical (pgdr.logical), under dumps/
PG_DUMP_KINDS = ("dump", "schema-dump")  # pg_dump archives; an export is CSV files
LEGACY_KEY = "sha256"  # the digest fields' name in manifests of the legacy scheme


class ForgedManifest(RuntimeFailure):
    """A manifest whose authentication code does not match: altered or forged."""


@dataclass
class ChunkEntry:
    """One stored chunk: ``size`` plain bytes, stored as ``stored_size`` sealed bytes."""

    size: int
    stored_size: int
    digest: str  # of the stored (sealed) object, under the manifest's digest scheme


@dataclass
class FileEntry:
    """One member of the data directory archive."""

    path: str
    kind: str  # file, dir, symlink
    size: int
    mode: int
    digest: str | None  # under the manifest's digest scheme (pgdr.backup.digest)
    offset: int  # where the data starts in the archive stream
    linkname: str = ""


@dataclass
class Manifest:
    id: str
    kind: str  # "full" or "incremental"
    parent: str | None
    label: str | None
    keep: bool
    pg_version: str
    pg_major: int
    system_identifier: str
    timeline: int
    start_lsn: str
    stop_lsn: str
    start_time: str
    stop_time: str
    chunk_size: int
    stream_size: int
    stored_size: int
    compression: str
    encryption: str
    host: str
    pgdr_version: str
    chunks: list[ChunkEntry] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    wrapped_key: WrappedKey | None = None
    hmac: str = ""
    format: int = FORMAT
    database: str = ""  # the database of a dump; base backups hold the whole cluster
    digest_scheme: str = LEGACY  # how ``digest`` fields are computed (pgdr.backup.digest)

    # ----- derived --------------------------------------------------------------------------
    @property
    def key_id(self) -> str:
        return self.wrapped_key.master_key_id if self.wrapped_key else ""

    @property
    def stop_datetime(self) -> datetime:
        return parse_time(self.stop_time)

    @property
    def start_datetime(self) -> datetime:
        return parse_time(self.start_time)

    @property
    def area(self) -> str:
        """Where the object lives: ``dumps/`` for logical dumps, ``backups/`` otherwise."""
        return DUMPS if self.kind in DUMP_KINDS else BACKUPS

    def file_digest(self, entry: FileEntry) -> FileDigest:
        """A digest to feed ``entry``'s bytes, in order, to compare with ``entry.digest``."""
        return FileDigest(self.digest_scheme, entry.offset, self.chunk_size)

    def object_digest(self, sealed: bytes | memoryview) -> str:
        """The digest of a stored object, to compare with its ``ChunkEntry.digest``."""
        return object_digest(self.digest_scheme, sealed)

    def chunk_key(self, index: int) -> str:
        return chunk_key(self.id, index, self.area)

    def chunks_of(self, entry: FileEntry) -> range:
        """The chunk indexes (0-based) that hold ``entry``'s data."""
        first = entry.offset // self.chunk_size
        last = (entry.offset + max(entry.size, 1) - 1) // self.chunk_size
        return range(first, last + 1)

    def summary(self) -> dict[str, Any]:
        """What ``backup list`` shows: everything but the chunk and file lists and the key."""
        data = self.signed_fields()
        data.pop("chunks")
        data.pop("files")
        data["key_id"] = self.key_id
        data["chunk_count"] = len(self.chunks)
        data["file_count"] = sum(1 for f in self.files if f.kind == "file")
        return data

    # ----- encoding -------------------------------------------------------------------------
    def signed_fields(self) -> dict[str, Any]:
        """The fields the HMAC covers, as plain data (what ``asdict`` gives, without its deep
        copy of every value: a thousand files took it 18 ms, at every authentication)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["chunks"] = [_plain(entry, CHUNK_FIELDS) for entry in self.chunks]
        data["files"] = [_plain(entry, FILE_FIELDS) for entry in self.files]
        data.pop("wrapped_key")
        data.pop("hmac")
        if not data["database"]:
            data.pop("database")  # base backups keep the encoding they were signed with
        if data["digest_scheme"] == LEGACY:  # as written before there were two schemes
            data.pop("digest_scheme")
            for entry in (*data["chunks"], *data["files"]):
                entry[LEGACY_KEY] = entry.pop("digest")
        return data

    def canonical(self) -> bytes:
        return json.dumps(self.signed_fields(), sort_keys=True, separators=(",", ":")).encode()

    def sign_with(self, data_key: DataKey) -> None:
        self.hmac = sign(derive_subkey(data_key, SIGNING_PURPOSE), self.canonical())

    def to_json(self) -> bytes:
        data = self.signed_fields()
        data["wrapped_key"] = self.wrapped_key.as_dict() if self.wrapped_key else None
        data["hmac"] = self.hmac
        return json.dumps(data, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Manifest:
        try:
            data = json.loads(raw)
            chunks = [ChunkEntry(**_renamed(c)) for c in data.pop("chunks")]
            files = [FileEntry(**_renamed(f)) for f in data.pop("files")]
            wrapped = data.pop("wrapped_key")
            manifest = cls(**data, chunks=chunks, files=files)
            manifest.wrapped_key = WrappedKey.from_dict(wrapped) if wrapped else None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ForgedManifest(f"The manifest {where} is not a valid pgdr manifest.") from exc
        problem = manifest.malformed_field()
        if problem:
            raise ForgedManifest(f"The manifest {where} is not a valid pgdr manifest ({problem}).")
        if manifest.format != FORMAT:
            raise RuntimeFailure(
                f"The manifest {where} has format {manifest.format}, which this pgdr cannot read."
            )
        return manifest

    def malformed_field(self) -> str | None:
        """The first field whose value has the wrong type or form, if any."""
        for f in fields(self):
            value = getattr(self, f.name)
            expected = _FIELD_TYPES.get(str(f.type))
            if expected is not None and not _is_instance(value, expected):
                return f"{f.name} is {value!r}"
        for name in ("start_time", "stop_time"):
            try:
                parse_time(getattr(self, name))
            except ValueError:
                return f"{name} is {getattr(self, name)!r}"
        if self.digest_scheme not in SCHEMES:
            return f"digest_scheme is {self.digest_scheme!r}"
        return None

    def authenticate(self, master: MasterKey, where: str) -> DataKey:
        """Unwrap the data key and check the HMAC; returns the data key."""
        if self.wrapped_key is None:
            raise ForgedManifest(f"The manifest {where} has no data key.")
        data_key = master.unwrap(self.wrapped_key, f"backup {self.id}")
        if not verify_signature(
            derive_subkey(data_key, SIGNING_PURPOSE), self.canonical(), self.hmac
        ):
            raise ForgedManifest(
                f"The manifest {where} fails authentication: it was altered or forged."
            )
        return data_key


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "str | None": (str, type(None)),
}


CHUNK_FIELDS = tuple(f.name for f in fields(ChunkEntry))
FILE_FIELDS = tuple(f.name for f in fields(FileEntry))


def _plain(entry: ChunkEntry | FileEntry, names: tuple[str, ...]) -> dict[str, Any]:
    """An entry's fields (all of plain types) as a new dict."""
    return {name: getattr(entry, name) for name in names}


def _renamed(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as stored by a manifest of the legacy scheme, with the current field names."""
    if LEGACY_KEY in entry and "digest" not in entry:
        entry["digest"] = entry.pop(LEGACY_KEY)
    return entry


def _is_instance(value: object, expected: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in expected:
        return False
    return isinstance(value, expected)


def chunk_key(backup_id: str, index: int, area: str = BACKUPS) -> str:
    return f"{area}{backup_id}/chunks/{index + 1:06d}"


def now_utc() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
