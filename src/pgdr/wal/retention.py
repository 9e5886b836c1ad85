"""Which WAL retention may remove: everything older than the oldest kept backup needs.

Every moment of the recovery window is reached by replaying WAL from a kept base backup's start
LSN onwards, so WAL files (segments, partials, backup history files, on any timeline) wholly
before the oldest kept backup's start segment serve no restore and are removed, as are restore
points before it. Timeline history files are always kept: they are tiny and a restore needs all
of them to choose an unused timeline id. With no kept backup nothing is removed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pgdr.backup.repository import Repository
from pgdr.wal.archive import KEYRING, WalArchive, repository_archive
from pgdr.wal.marks import MARKS, list_marks
from pgdr.wal.names import (
    Segment,
    is_backup_history,
    is_history,
    is_partial,
    is_segment,
    parse_lsn,
    parse_segment,
    segment_of_lsn,
)


@dataclass
class WalPruneReport:
    dry_run: bool
    keep_from: str | None  # the oldest segment kept (timeline 1 naming of its number)
    removed: list[str] = field(default_factory=list)
    removed_marks: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    kept_files: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["removed_count"] = len(self.removed)
        data["removed"] = self.removed[:50]
        return data


def prune_wal(archive: WalArchive, kept_start_lsns: list[str], dry_run: bool) -> WalPruneReport:
    """Remove WAL before the oldest kept backup's start (or only list it with ``dry_run``)."""
    if not kept_start_lsns:
        return WalPruneReport(dry_run, None)
    size = archive.segment_size
    first = min(segment_of_lsn(parse_lsn(lsn), size) for lsn in kept_start_lsns)
    report = WalPruneReport(dry_run, Segment(1, first).name(size))
    for name, stored in list(archive.names()):
        if is_history(name):
            report.kept_files += 1
            continue
        base = name[:24]
        if (is_segment(name) or is_partial(name) or is_backup_history(name)) and parse_segment(
            base, size
        ).segno < first:
            report.removed.append(name)
            report.freed_bytes += stored
            if not dry_run:
                archive.delete(name)
        else:
            report.kept_files += 1
    for mark in list_marks(archive):
        if segment_of_lsn(parse_lsn(str(mark["lsn"])), size) < first:
            report.removed_marks.append(str(mark["name"]))
            if not dry_run:
                archive.store.delete(f"{MARKS}{mark['name']}.json")
    return report


def prune_repository_wal(
    repo: Repository, kept_backup_ids: list[str], dry_run: bool
) -> WalPruneReport | None:
    """``pgdr prune``'s WAL half; None when the repository holds no WAL."""
    if not repo.store.exists(KEYRING):
        return None
    archive = repository_archive(repo)
    starts = [repo.read_manifest(bid).start_lsn for bid in kept_backup_ids]
    return prune_wal(archive, starts, dry_run)
