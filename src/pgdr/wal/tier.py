"""WAL for a second tier: ``pgdr repo copy`` carries the WAL its backups need, and all since.

A tier promises point-in-time recovery only if it holds, for some base backup, every WAL
segment from that backup's start onwards. So after copying backups, the copy brings every WAL
file of the source from the oldest start segment of the destination's backups on (segments,
partial pieces, backup history files), every timeline history file and restore point. Each
object is opened (authenticated) with the source's WAL key before it is written, and read back;
the sealed bytes are copied as they are when both repositories share the WAL data key (the
destination had no WAL keyring, so it receives the source's), and re-sealed under the
destination's WAL key otherwise. What the source's streamer last did (``wal/state/``) is not
copied, except the records of the newest WAL read (partial and archive), so ``wal status`` on
the destination reports the WAL the destination holds and no streamer it does not have. Files
already present are skipped, so each run copies only what is new: the WAL of a tier is as
recent as its last copy.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

from pgdr.backup.copy import CopyReport, Progress, copy_backup
from pgdr.backup.repository import Repository
from pgdr.core.errors import RuntimeFailure
from pgdr.crypto import open_sealed, seal
from pgdr.storage import ObjectNotFound
from pgdr.wal.archive import KEYRING, PREFIX, STATE_PREFIX, WalArchive, name_of_key
from pgdr.wal.names import is_history, parse_lsn, parse_segment, segment_of_lsn

COPIED_STATES = ("partial", "archive")


@dataclass
class WalCopyReport:
    files_copied: int = 0
    files_present: int = 0
    bytes_copied: int = 0
    from_segment: str | None = None
    resealed: bool = False
    source_has_wal: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def copy_to_tier(
    source: Repository,
    destination: Repository,
    backup_id: str,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
) -> CopyReport:
    """``pgdr repo copy``: the backup (with its parents), then the WAL, under one lock."""
    return copy_backup(
        source,
        destination,
        backup_id,
        progress=progress,
        workers=workers,
        also=lambda: copy_wal(source, destination).as_dict(),
    )


def copy_wal(source: Repository, destination: Repository) -> WalCopyReport:
    """Copy the WAL ``destination``'s backups need, and all WAL since (call holding its lock)."""
    report = WalCopyReport()
    if not source.store.exists(KEYRING):
        report.source_has_wal = False
        return report
    src = WalArchive.open(source.store, source.master_key)
    if not destination.store.exists(KEYRING):
        destination.store.put(KEYRING, source.store.get(KEYRING))
    dst = WalArchive.open(destination.store, destination.master_key)
    report.resealed = dst.key.key != src.key.key
    starts = [m.start_lsn for m in destination.list_backups()]
    if not starts:
        return report
    first = min(segment_of_lsn(parse_lsn(lsn), src.segment_size) for lsn in starts)
    report.from_segment = f"{first:016X}"
    present = {info.key for info in destination.store.list(PREFIX)}
    for info in list(source.store.list(PREFIX)):
        if info.key in present or not _wanted(info.key, first, src.segment_size):
            if info.key in present:
                report.files_present += 1
            continue
        report.bytes_copied += _copy_object(src, dst, info.key)
        report.files_copied += 1
    for state in COPIED_STATES:
        record = src.get_state(state)
        if record is not None:
            dst.put_state(state, record)
    return report


def _wanted(key: str, first: int, segment_size: int) -> bool:
    if key == KEYRING or key.startswith(STATE_PREFIX):
        return False
    name = name_of_key(key)
    if name is None:
        return True  # restore points and other sealed records
    if is_history(name):
        return True
    return parse_segment(name[:24], segment_size).segno >= first


def _copy_object(src: WalArchive, dst: WalArchive, key: str) -> int:
    raw = src.store.get(key)
    plain = open_sealed(src.key, key, raw)  # never carry on what does not authenticate
    out = raw if dst.key.key == src.key.key else seal(dst.key, key, plain)
    dst.store.put(key, out)
    try:
        back = dst.store.get(key)
    except ObjectNotFound as exc:
        raise RuntimeFailure(f"{key} vanished from {dst.store.url} right after copying.") from exc
    if hashlib.sha256(back).digest() != hashlib.sha256(out).digest():
        raise RuntimeFailure(f"{key} reads back differently from {dst.store.url}.")
    return len(out)
