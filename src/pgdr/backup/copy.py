"""Copying backups between repositories (the runbook's primary and secondary tiers).

Every chunk is read from the source, checked (size, SHA-256, AES-GCM authentication), written to
the destination and read back there to confirm its SHA-256; the manifest is written last, so an
interrupted copy leaves an incomplete backup that the destination's next backup or prune removes.
An incremental backup brings its parents along when the destination lacks them. ``also`` runs
under the destination's lock once the backups are there: ``pgdr.wal.tier`` uses it to bring the
WAL those backups need, so a tier that receives copies can restore to a point in time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pgdr.backup.chunks import damaged_chunk
from pgdr.backup.manifest import BACKUPS, Manifest
from pgdr.backup.repository import Repository
from pgdr.core.errors import ConfigError, PgdrError, RuntimeFailure
from pgdr.crypto import CorruptObject, DataKey, open_sealed, parallel_map
from pgdr.storage import ObjectNotFound

Progress = Callable[[int], None]


@dataclass
class CopyReport:
    source: str
    destination: str
    copied: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    bytes_copied: int = 0
    wal: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def copy_backup(
    source: Repository,
    destination: Repository,
    backup_id: str,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
    also: Callable[[], dict[str, Any]] | None = None,
) -> CopyReport:
    """Copy ``backup_id`` (and any parents the destination lacks), verified."""
    if source.url == destination.url:
        raise ConfigError("The source and destination repositories are the same.")
    manifest = source.read_manifest(source.resolve_id(backup_id))
    chain = [manifest]
    while chain[0].parent is not None:
        chain.insert(0, source.read_manifest(chain[0].parent))
    report = CopyReport(source.name, destination.name)
    destination.store.check_writable()
    with destination.locked("copy"):
        destination.check_system_identifier(manifest.system_identifier)
        destination.clean_incomplete()
        present = {m.id for m in destination.list_backups()}
        for member in chain:
            if member.id in present:
                report.already_present.append(member.id)
                continue
            report.bytes_copied += _copy_one(source, destination, member, progress, workers)
            report.copied.append(member.id)
        if also is not None:
            report.wal = also()
    return report


def _copy_one(
    source: Repository,
    destination: Repository,
    manifest: Manifest,
    progress: Progress | None,
    workers: int | None,
) -> int:
    data_key = manifest.authenticate(source.master_key, f"of backup {manifest.id}")

    def copy_chunk(index: int) -> int:
        key = manifest.chunk_key(index)
        entry = manifest.chunks[index]
        try:
            sealed = source.store.get(key)
        except ObjectNotFound as exc:
            raise damaged_chunk(manifest, index, "it is missing") from exc
        if manifest.object_digest(sealed) != entry.digest:
            raise damaged_chunk(manifest, index, "its checksum differs")
        _authenticate(manifest, data_key, index, sealed)
        destination.store.put(key, sealed)
        if manifest.object_digest(destination.store.get(key)) != entry.digest:
            raise RuntimeFailure(
                f"Chunk {index + 1} of backup {manifest.id} reads back differently from "
                f"{destination.name}; the copy was abandoned."
            )
        return entry.stored_size

    copied = 0
    try:
        for size in parallel_map(copy_chunk, range(len(manifest.chunks)), workers):
            copied += size
            if progress:
                progress(size)
        pg_manifest = f"{BACKUPS}{manifest.id}/backup_manifest"
        sealed = source.store.get(pg_manifest)
        open_sealed(data_key, pg_manifest, sealed)
        destination.store.put(pg_manifest, sealed)
        destination.store.put(destination.manifest_key(manifest.id), manifest.to_json())
        destination.read_manifest(manifest.id)  # read back and authenticate
    except BaseException:
        with contextlib.suppress(PgdrError, OSError):
            destination.store.delete_prefix(f"{BACKUPS}{manifest.id}/")
        raise
    return copied


def _authenticate(manifest: Manifest, data_key: DataKey, index: int, sealed: bytes) -> None:
    try:
        open_sealed(data_key, manifest.chunk_key(index), sealed)
    except CorruptObject as exc:
        raise damaged_chunk(manifest, index, "it fails authentication") from exc
