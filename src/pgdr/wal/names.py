"""WAL positions and file names: LSNs, segment names, timelines, history files.

A segment name is ``TTTTTTTTXXXXXXXXYYYYYYYY``: the timeline, then the segment number split in
two 32-bit halves (how many segments fit in 4 GiB depends on the cluster's segment size). The
names of the other files PostgreSQL archives are derived from it: ``TTTTTTTT.history`` (a
timeline's ancestry), ``<segment>.XXXXXXXX.backup`` (a backup history file) and
``<segment>.partial`` (the segment being written, as pg_receivewal keeps it). In the repository
a partial segment is stored as pieces ``<segment>.partial.OOOOOOOO``, each holding its bytes
from offset ``OOOOOOOO`` on, so a growing segment is uploaded by its new bytes only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgdr.core.errors import ConfigError

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
PARTIAL_RE = re.compile(r"^([0-9A-F]{24})\.partial(?:\.([0-9A-F]{8}))?$")
BACKUP_RE = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$")
LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` as an integer byte position; a clear error for anything else."""
    match = LSN_RE.match(text.strip())
    if match is None:
        raise ConfigError(f"{text!r} is not an LSN (expected the form 16/B374D848).")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segments_per_xlogid(segment_size: int) -> int:
    return 0x100000000 // segment_size


def segment_name(timeline: int, segno: int, segment_size: int) -> str:
    per = segments_per_xlogid(segment_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def segment_of_lsn(lsn: int, segment_size: int) -> int:
    return lsn // segment_size


@dataclass(frozen=True, order=True)
class Segment:
    """One WAL segment: its timeline and its number."""

    timeline: int
    segno: int

    def name(self, segment_size: int) -> str:
        return segment_name(self.timeline, self.segno, segment_size)

    def start_lsn(self, segment_size: int) -> int:
        return self.segno * segment_size


def parse_segment(name: str, segment_size: int) -> Segment:
    match = SEGMENT_RE.match(name)
    if match is None:
        raise ConfigError(f"{name!r} is not a WAL segment name.")
    timeline = int(match.group(1), 16)
    segno = int(match.group(2), 16) * segments_per_xlogid(segment_size) + int(match.group(3), 16)
    return Segment(timeline, segno)


def is_segment(name: str) -> bool:
    return SEGMENT_RE.match(name) is not None


def is_history(name: str) -> bool:
    return HISTORY_RE.match(name) is not None


def is_partial(name: str) -> bool:
    return PARTIAL_RE.match(name) is not None


def partial_offset(name: str) -> int:
    """Where a partial piece's bytes start in its segment (0 for a plain ``.partial``)."""
    match = PARTIAL_RE.match(name)
    if match is None:
        raise ConfigError(f"{name!r} is not a partial WAL segment name.")
    return int(match.group(2), 16) if match.group(2) else 0


def partial_piece(segment: str, offset: int) -> str:
    return f"{segment}.partial.{offset:08X}"


def is_backup_history(name: str) -> bool:
    return BACKUP_RE.match(name) is not None


def history_name(timeline: int) -> str:
    return f"{timeline:08X}.history"


def timeline_of(name: str) -> int:
    """The timeline a WAL file name belongs to (segments, partials, history, backup files)."""
    return int(name[:8], 16)


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a timeline history file: ``parent`` ended at ``switch_lsn``."""

    parent: int
    switch_lsn: int
    reason: str


def parse_history(text: str) -> list[HistoryEntry]:
    """The entries of a ``.history`` file, oldest first (comments and blank lines skipped)."""
    entries: list[HistoryEntry] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 2)
        if len(fields) < 2:
            continue
        entries.append(
            HistoryEntry(int(fields[0]), parse_lsn(fields[1]), fields[2] if len(fields) > 2 else "")
        )
    return entries
