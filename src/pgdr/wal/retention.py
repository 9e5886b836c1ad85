"""Which WAL retention may remove: everything older than the oldest kept backup needs.

Every moment of the recovery window is reached by replaying WAL from a kept base backup's start
LSN onwards, so WAL files (segments, partials, backup history files, on any timeline) wholly
before the oldest kept backup's start segment serve no restore and are removed, as are restore
points before it. Timeline history files are always kept: they are tiny and a restore needs all
of them to choose an unused timeline id. With no kept backup nothing is removed.

:func:`prune_repository` is ``pgdr prune``: the backups, then their WAL, under one hold of the
repository's lock, with every refusal before anything is removed: a repository that does not
exist, manifests or a WAL keyring sealed by another key. Two more rules keep what retention by
dates alone would lose:

* for every timeline whose WAL goes on (:meth:`~pgdr.wal.chain.Chain.tips`), the newest backup
  from which it can be reached stays: after a point-in-time restore whose cluster streams into
  the same repository, the backups taken on the old timeline after the branch point cannot
  restore the new one;
* no WAL is removed while a backup's manifest cannot be read: where that backup's WAL starts
  is unknown.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from pgdr.backup.manifest import BACKUPS, Manifest
from pgdr.backup.repository import Repository
from pgdr.backup.retention import (
    Decision,
    PruneReport,
    carry_out,
    decide,
    keep_also,
    require_repository,
)
from pgdr.wal.archive import KEYRING, WalArchive, repository_archive
from pgdr.wal.chain import Chain
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
    skipped: str | None = None  # why no WAL was removed at all

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


def prune_repository(
    repo: Repository, *, dry_run: bool = False, now: datetime | None = None
) -> tuple[PruneReport, WalPruneReport | None]:
    """``pgdr prune``: the retention policy applied to the base backups, then to their WAL
    (None when the repository holds none), all under one hold of the lock."""
    require_repository(repo)
    with nullcontext() if dry_run else repo.locked("prune"):
        # the keyring opens before anything is removed: a wrong key stops here
        archive = repository_archive(repo) if repo.store.exists(KEYRING) else None
        valid, decisions, invalid = decide(repo, BACKUPS, repo.config.retention, now)
        if archive is not None:
            keep_newest_timelines_base(Chain.load(archive), valid, decisions)
        incomplete = repo.incomplete_backups() if dry_run else carry_out(repo, decisions)
        report = PruneReport(repo.name, dry_run, decisions, invalid, incomplete)
        if archive is None:
            return report, None
        if invalid:
            skipped = WalPruneReport(dry_run, None, skipped=_unread(invalid))
            return report, skipped
        by_id = {m.id: m for m in valid}
        starts = [by_id[d.backup_id].start_lsn for d in decisions if d.keep]
        return report, prune_wal(archive, starts, dry_run)


def _unread(invalid: list[str]) -> str:
    return (
        f"no WAL was removed: where the WAL of {', '.join(invalid)} starts is unknown while "
        "its manifest cannot be read (repair it, or remove that backup)"
    )


def keep_newest_timelines_base(
    chain: Chain, backups: list[Manifest], decisions: list[Decision]
) -> None:
    """For every timeline whose history goes on (:meth:`Chain.tips`), keep the newest backup
    from which it can be reached."""
    kept = {d.backup_id for d in decisions if d.keep}
    for tip in chain.tips():
        reaching = [m for m in backups if chain.leads_from(tip, m.timeline, parse_lsn(m.start_lsn))]
        if reaching and (base := max(reaching, key=lambda m: (m.stop_time, m.id))).id not in kept:
            keep_also(decisions, backups, base, f"base of timeline {tip}, whose WAL goes on")
