"""``pgdr wal status``: what is archived, gaps, the streamer's lag, the recovery window.

The recovery window is what this repository can really restore: it starts at the oldest backup
for which the repository holds every WAL segment from the backup's start to its end (and on),
and a backup lacking any of them is listed as without its WAL instead. A repository with
backups but none of their WAL has no window, whatever another tier holds.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pgdr.backup.repository import Repository
from pgdr.core.errors import CheckFailed
from pgdr.wal.archive import WalArchive, repository_archive
from pgdr.wal.chain import Chain, choose_timeline
from pgdr.wal.names import Segment, parse_lsn, segment_of_lsn

STALE_HEARTBEAT_S = 10.0


@dataclass
class TimelineSummary:
    timeline: int
    first: str | None
    last: str | None
    segments: int
    partial: str | None


@dataclass
class WalStatus:
    repository: str
    system_identifier: str
    segment_size: int
    timelines: list[TimelineSummary] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    newest_wal_at: float | None = None
    streamer: dict[str, Any] | None = None
    streamer_alive: bool = False
    archive: dict[str, Any] | None = None
    window_start: float | None = None
    window_end: float | None = None
    stored_bytes: int = 0
    backups_without_wal: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def newest_wal_time(archive: WalArchive) -> float | None:
    """Up to when the repository holds WAL: the newest partial read or archived segment."""
    times: list[float] = []
    partial = archive.get_state("partial")
    if partial:
        # still there, or completed since (then its segment holds at least as much)
        segment = str(partial["name"])[:24]
        if archive.has_partial(segment) or archive.exists(segment):
            times.append(float(partial["read_at"]))
    pushed = archive.get_state("archive")
    if pushed:
        times.append(float(pushed["mtime"]))
    return max(times) if times else None


def usable_backup_stops(
    chain: Chain, backups: list[tuple[str, int, str, str, float]]
) -> tuple[list[float], list[str]]:
    """Stop times of the backups whose WAL is all here, and why the others are not usable.

    ``backups`` are (id, timeline, start LSN, stop LSN, stop time as a timestamp).
    """
    stops: list[float] = []
    missing: list[str] = []
    for backup_id, tli, start, stop, stop_at in backups:
        start_lsn = parse_lsn(start)
        try:
            target = choose_timeline(chain, tli, start_lsn, None)
            chain.needed(
                target,
                start_lsn,
                None,
                use_partial=True,
                required_until=segment_of_lsn(parse_lsn(stop), chain.segment_size),
            )
        except CheckFailed as exc:
            missing.append(f"backup {backup_id}: {exc.message}")
            continue
        stops.append(stop_at)
    return stops, missing


def repository_wal_status(repo: Repository) -> WalStatus:
    """``pgdr wal status`` of ``repo``: its WAL, and the window its own backups and WAL give."""
    archive = repository_archive(repo)
    backups = [
        (m.id, m.timeline, m.start_lsn, m.stop_lsn, m.stop_datetime.timestamp())
        for m in repo.list_backups()
        if m.system_identifier == str(archive.system_identifier)
    ]
    return wal_status(archive, backups)


def wal_status(
    archive: WalArchive, backups: list[tuple[str, int, str, str, float]] | None = None
) -> WalStatus:
    chain = Chain.load(archive)
    size = archive.segment_size
    report = WalStatus(
        repository=archive.store.url,
        system_identifier=str(archive.system_identifier),
        segment_size=size,
    )
    report.stored_bytes = sum(s for _n, s in archive.names())
    for tli in chain.timelines:
        segs = sorted(chain.segments.get(tli, set()))
        partials = sorted(chain.partials.get(tli, set()))
        if not segs and not partials:
            continue
        report.timelines.append(
            TimelineSummary(
                timeline=tli,
                first=Segment(tli, segs[0]).name(size) if segs else None,
                last=Segment(tli, segs[-1]).name(size) if segs else None,
                segments=len(segs),
                partial=Segment(tli, partials[-1]).name(size) + ".partial" if partials else None,
            )
        )
    report.gaps = chain.gaps()
    report.streamer = archive.get_state("streamer")
    if report.streamer:
        age = time.time() - float(report.streamer.get("heartbeat_at", 0))
        report.streamer_alive = age < STALE_HEARTBEAT_S and report.streamer["state"] != "stopped"
    report.archive = archive.get_state("archive")
    report.newest_wal_at = newest_wal_time(archive)
    stops, report.backups_without_wal = usable_backup_stops(chain, backups or [])
    report.window_start = min(stops) if stops else None
    report.window_end = report.newest_wal_at if stops else None
    return report
