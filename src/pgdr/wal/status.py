"""``pgdr wal status``: what is archived, gaps, the streamer's lag, the recovery window.

The lag is measured against the server itself (``pg_current_wal_lsn()``) whenever it can be
reached, never taken from the streamer's own last heartbeat alone: a stopped streamer reports no
lag because it reports nothing. :func:`wal_problems` turns a status into the sentences that make
``wal status`` exit 1 (a gap, a silent streamer, a repository behind the server), and the
monitor's WAL checks use the same function, so the two never disagree.

The recovery window is what this repository can really restore: it starts at the oldest backup
for which the repository holds every WAL segment from the backup's start to its end (and on),
and a backup lacking any of them is listed as without its WAL instead. A repository with
backups but none of their WAL has no window, whatever another tier holds.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg

from pgdr.backup.repository import Repository
from pgdr.core.errors import CheckFailed, PgdrError
from pgdr.wal.archive import WalArchive, repository_archive
from pgdr.wal.chain import Chain, choose_timeline
from pgdr.wal.names import Segment, format_lsn, parse_lsn, parse_segment, segment_of_lsn
from pgdr.wal.server import connect

STALE_HEARTBEAT_S = 10.0
SYNCHRONOUS_STATES = ("sync", "quorum")


@dataclass(frozen=True)
class LagLimits:
    """How far the repository may trail the server before it is a problem."""

    max_bytes: int = 16 * 1024 * 1024  # one default WAL segment
    max_seconds: float = 300.0


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
    repository_lsn: str | None = None
    server_lsn: str | None = None
    server_error: str | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    synchronous: bool = False
    problems: list[str] = field(default_factory=list)
    backups_without_wal: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def newest_wal_time(archive: WalArchive) -> float | None:
    """Up to when the repository holds WAL: the newest moment the streamer proved held (see
    :mod:`pgdr.wal.uploader`; none yet right after it started), or the newest archived
    segment's."""
    times: list[float] = []
    partial = archive.get_state("partial")
    if partial and partial.get("read_at") is not None:
        # still there, or completed since (then its segment holds at least as much)
        segment = str(partial["name"])[:24]
        if archive.has_partial(segment) or archive.exists(segment):
            times.append(float(partial["read_at"]))
    pushed = archive.get_state("archive")
    if pushed:
        times.append(float(pushed["mtime"]))
    return max(times) if times else None


def wal_status(
    archive: WalArchive, window_start: float | None = None, chain: Chain | None = None
) -> WalStatus:
    chain = chain or Chain.load(archive)
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
    report.gaps = chain.gaps() + chain.switch_gaps()
    report.streamer = archive.get_state("streamer")
    if report.streamer:
        age = time.time() - float(report.streamer.get("heartbeat_at", 0))
        report.streamer_alive = age < STALE_HEARTBEAT_S and report.streamer["state"] != "stopped"
    report.archive = archive.get_state("archive")
    report.newest_wal_at = newest_wal_time(archive)
    report.window_start = window_start
    report.window_end = report.newest_wal_at if window_start is not None else None
    return report


def usable_backup_stops(
    chain: Chain, backups: list[tuple[str, int, str, str, float]]
) -> tuple[list[float], list[str], bool]:
    """Stop times of the backups whose WAL is all here, why the others are not usable, and
    whether the WAL of one of them runs on to the newest without a gap.

    ``backups`` are (id, timeline, start LSN, stop LSN, stop time as a timestamp).
    """
    stops: list[float] = []
    missing: list[str] = []
    unbroken = False
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
        unbroken = unbroken or _runs_to_newest(chain, target, start_lsn)
    return stops, missing, unbroken


def _runs_to_newest(chain: Chain, tli: int, start_lsn: int) -> bool:
    try:
        chain.needed(tli, start_lsn, None, use_partial=True)
    except CheckFailed:
        return False
    return True


def repository_end(archive: WalArchive, chain: Chain) -> int | None:
    """The byte position up to which the repository holds WAL (segments and the partial)."""
    size = archive.segment_size
    ends = [(max(segs) + 1) * size for segs in chain.segments.values() if segs]
    partial = archive.get_state("partial")
    if partial and partial.get("bytes") is not None:
        with contextlib.suppress(PgdrError):
            seg = parse_segment(str(partial["name"])[:24], size)
            ends.append(seg.start_lsn(size) + int(partial["bytes"]))
    return max(ends) if ends else None


def server_position(conninfo: str) -> tuple[int | None, str | None]:
    """The server's current WAL position, or why it could not be read."""
    try:
        with connect(conninfo) as conn:
            row = conn.execute(
                "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn WHERE NOT pg_is_in_recovery()"
            ).fetchone()
    except PgdrError as exc:
        return None, exc.message
    except psycopg.Error as exc:  # the server went away mid-query: "not measured"
        return None, str(exc).strip() or type(exc).__name__
    if row is None:
        return None, "the server is in recovery; lag is measured on the primary"
    return int(row[0]), None


def measure_lag(
    report: WalStatus, archive: WalArchive, chain: Chain, server_lsn: int | None
) -> None:
    """Fill in the repository's position and how far it trails ``server_lsn``."""
    end = repository_end(archive, chain)
    report.repository_lsn = format_lsn(end) if end is not None else None
    if server_lsn is None:
        return
    report.server_lsn = format_lsn(server_lsn)
    report.lag_bytes = max(0, server_lsn - (end or 0))
    if report.lag_bytes == 0:
        report.lag_seconds = 0.0
    elif report.newest_wal_at is not None:
        report.lag_seconds = round(max(0.0, time.time() - report.newest_wal_at), 3)


def wal_problems(report: WalStatus, limits: LagLimits) -> list[str]:
    """One sentence per reason the WAL protection is not in order; empty when it is."""
    problems = gap_problems(report)
    if report.streamer and not report.streamer_alive:
        beat = float(report.streamer.get("heartbeat_at", 0))
        problems.append(
            f"The WAL streamer is {report.streamer.get('state')} and silent since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(beat))} UTC: "
            "restart `pgdr wal stream`."
        )
    if report.streamer and report.streamer_alive and report.streamer.get("receiver_error"):
        problems.append(f"The WAL receiver is failing: {report.streamer['receiver_error']}")
    return problems + lag_problems(report, limits)


def gap_problems(report: WalStatus) -> list[str]:
    """The sentence for missing segments, if any."""
    if not report.gaps:
        return []
    return [
        f"The WAL has {len(report.gaps)} missing segment(s), first {report.gaps[0]}: "
        "no restore can cross a gap; take a new base backup after it."
    ]


def lag_problems(report: WalStatus, limits: LagLimits) -> list[str]:
    """The sentence for a repository too far behind the server, if it is."""
    if report.lag_bytes is not None and report.lag_bytes > limits.max_bytes:
        return [
            f"The repository is {report.lag_bytes:,} bytes behind the server "
            f"(limit {limits.max_bytes:,}): WAL is not reaching pgdr."
        ]
    if (
        report.lag_seconds is not None
        and report.lag_bytes
        and report.lag_seconds > limits.max_seconds
    ):
        return [
            f"The repository's newest WAL is {report.lag_seconds:.0f} s old while the server "
            f"has {report.lag_bytes:,} bytes more (limit {limits.max_seconds:.0f} s)."
        ]
    return []


def observe_wal(
    archive: WalArchive,
    window_start: float | None,
    conninfo: str | None,
    limits: LagLimits | None = None,
) -> WalStatus:
    """The status with the server's position (when reachable) and its problems."""
    chain = Chain.load(archive)
    report = wal_status(archive, window_start, chain)
    server_lsn: int | None = None
    if conninfo is not None:
        server_lsn, report.server_error = server_position(conninfo)
    elif report.streamer_alive and report.streamer and report.streamer.get("server_lsn"):
        # no server to ask: the live streamer's own observation of it (a heartbeat old)
        server_lsn = parse_lsn(str(report.streamer["server_lsn"]))
    measure_lag(report, archive, chain, server_lsn)
    streamer = report.streamer or {}
    # commits block while a synchronous streamer is away (until it degrades them to async);
    # with other walsenders under its name, PostgreSQL may wait for one of them instead
    report.synchronous = streamer.get("sync_state") in SYNCHRONOUS_STATES and not streamer.get(
        "namesakes"
    )
    report.problems = wal_problems(report, limits or LagLimits())
    return report


def repository_wal_status(
    repo: Repository, conninfo: str | None = None, limits: LagLimits | None = None
) -> WalStatus:
    """``pgdr wal status`` of ``repo``: its archive, and the recovery window its backups open.

    The window starts at the oldest base backup of this database system whose WAL this
    repository holds in full (the others are listed as without their WAL) and ends at the
    newest moment the streamer proved held (:mod:`pgdr.wal.uploader`), or the newest archived
    segment's; unknown (None) when a gap follows every one of those backups. With ``conninfo``
    the lag is measured against the server (else against the live streamer's observation of it)
    and the problems are listed.
    """
    archive = repository_archive(repo)
    backups = [
        (m.id, m.timeline, m.start_lsn, m.stop_lsn, m.stop_datetime.timestamp())
        for m in repo.list_backups()
        if m.system_identifier == str(archive.system_identifier)
    ]
    stops, without, unbroken = usable_backup_stops(Chain.load(archive), backups)
    report = observe_wal(archive, min(stops) if stops else None, conninfo, limits)
    report.backups_without_wal = without
    if stops and not unbroken:
        # a gap after every usable backup: no restore passes it, and when it happened is not
        # known (the gap is a problem, and `pgdr status` degraded)
        report.window_end = None
    return report
