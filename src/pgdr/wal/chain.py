"""The WAL chain in a repository: timelines, their ancestry, gaps, and what a restore needs.

PostgreSQL reads segment ``n`` of a recovery from the newest timeline in the target's ancestry
that had begun by then, so the segments a restore needs follow the target timeline's history:
its parents up to their switch points, then itself. A restore checks the whole list (and opens
every segment) before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pgdr.core.errors import CheckFailed, ConfigError
from pgdr.wal.archive import WalArchive
from pgdr.wal.names import (
    Segment,
    format_lsn,
    history_name,
    is_history,
    is_partial,
    is_segment,
    parse_history,
    parse_segment,
    segment_of_lsn,
)


@dataclass
class Chain:
    """What WAL the repository holds, indexed for planning."""

    segment_size: int
    segments: dict[int, set[int]] = field(default_factory=dict)  # timeline -> segnos
    partials: dict[int, set[int]] = field(default_factory=dict)
    histories: dict[int, list[tuple[int, int]]] = field(
        default_factory=dict
    )  # tli -> (parent, switch)

    @classmethod
    def load(cls, archive: WalArchive) -> Chain:
        chain = cls(archive.segment_size)
        for name, _size in archive.names():
            if is_segment(name):
                seg = parse_segment(name, chain.segment_size)
                chain.segments.setdefault(seg.timeline, set()).add(seg.segno)
            elif is_partial(name):
                seg = parse_segment(name[:24], chain.segment_size)
                chain.partials.setdefault(seg.timeline, set()).add(seg.segno)
            elif is_history(name):
                tli = int(name[:8], 16)
                entries = parse_history(archive.get(name).decode())
                chain.histories[tli] = [(e.parent, e.switch_lsn) for e in entries]
        return chain

    @property
    def timelines(self) -> list[int]:
        return sorted(set(self.segments) | set(self.partials) | set(self.histories) | {1})

    def ancestry(self, tli: int) -> list[tuple[int, int, int | None]]:
        """(timeline, begins at LSN, ends at LSN or None) from the oldest ancestor to ``tli``."""
        if tli != 1 and tli not in self.histories:
            raise CheckFailed(
                f"The history of timeline {tli} ({history_name(tli)}) is not in the repository."
            )
        entries = self.histories.get(tli, [])
        path: list[tuple[int, int, int | None]] = []
        begin = 0
        for parent, switch in entries:
            path.append((parent, begin, switch))
            begin = switch
        path.append((tli, begin, None))
        return path

    def leads_from(self, tli: int, base_tli: int, base_lsn: int) -> bool:
        """Whether timeline ``tli`` contains the point ``base_lsn`` of timeline ``base_tli``."""
        try:
            path = self.ancestry(tli)
        except CheckFailed:
            return False
        for t, begin, end in path:
            if t == base_tli and begin <= base_lsn and (end is None or base_lsn < end):
                return True
        return False

    def tips(self) -> list[int]:
        """The timelines holding WAL that no other one supersedes: timeline T is superseded by
        a timeline holding WAL that branched off T where T's WAL ends (or later), as after a
        failover or a restore the old server stopped at. Two tips are two histories going on:
        say, a point-in-time restore streaming into the repository while the old server still
        does."""
        ends = {
            t: max(self.segments.get(t, set()) | self.partials.get(t, set()))
            for t in self.timelines
            if self.segments.get(t) or self.partials.get(t)
        }
        superseded = set()
        for u in ends:
            try:
                path = self.ancestry(u)
            except CheckFailed:
                continue
            for t, _begin, end in path[:-1]:
                if (
                    t in ends
                    and end is not None
                    and ends[t] <= segment_of_lsn(end, self.segment_size)
                ):
                    superseded.add(t)
        return sorted(set(ends) - superseded)

    def timeline_of_segno(self, path: list[tuple[int, int, int | None]], segno: int) -> int:
        chosen = path[0][0]
        for t, begin, _end in path:
            if segment_of_lsn(begin, self.segment_size) <= segno:
                chosen = t
        return chosen

    def needed(
        self,
        tli: int,
        start_lsn: int,
        end_lsn: int | None,
        use_partial: bool,
        required_until: int | None = None,
    ) -> list[tuple[Segment, bool]]:
        """The segments from ``start_lsn`` to ``end_lsn`` (or the newest) along ``tli``'s path.

        Each entry says whether it comes from a ``.partial``. A missing segment up to
        ``required_until`` (a segment number; all of them when None) is a CheckFailed naming
        it; past that, the list simply ends before the gap. Without ``end_lsn`` and
        ``required_until``, WAL that all ends before ``start_lsn`` gives an empty list.
        """
        path = self.ancestry(tli)
        first = segment_of_lsn(start_lsn, self.segment_size)
        newest = max(
            (
                segno
                for t, begin, end in path
                for segno in self.segments.get(t, set()) | self.partials.get(t, set())
                if segno >= segment_of_lsn(begin, self.segment_size)
                and (end is None or segno <= segment_of_lsn(end, self.segment_size))
            ),
            default=None,
        )
        if end_lsn is not None:
            last = segment_of_lsn(end_lsn, self.segment_size)
        else:  # the newest there is: none when all of it is older than ``start_lsn``
            last = first - 1 if newest is None else max(newest, first - 1)
        if required_until is not None:
            last = max(last, required_until)
        result: list[tuple[Segment, bool]] = []
        for segno in range(first, last + 1):
            t = self.timeline_of_segno(path, segno)
            seg = Segment(t, segno)
            if segno in self.segments.get(t, set()):
                result.append((seg, False))
                continue
            if use_partial and segno in self.partials.get(t, set()):
                result.append((seg, True))
                break  # the newest WAL there is: nothing can follow a partial segment
            if required_until is not None and segno > required_until:
                break
            raise CheckFailed(
                f"WAL segment {seg.name(self.segment_size)} is missing from the repository: "
                f"the WAL has a gap at {format_lsn(seg.start_lsn(self.segment_size))}, "
                "so no restore can cross it."
            )
        return result

    def gaps(self) -> list[str]:
        """Missing segments inside each timeline's stored range (names)."""
        missing: list[str] = []
        for tli, segnos in sorted(self.segments.items()):
            have = segnos | self.partials.get(tli, set())
            for segno in range(min(have), max(have)):
                if segno not in have:
                    missing.append(Segment(tli, segno).name(self.segment_size))
        return missing

    def switch_gaps(self) -> list[str]:
        """Segments missing around a timeline switch (a failover the streamer did not cover).

        For each timeline with WAL here, the segments from where its parent's WAL ends here to
        where its own begins must all be readable along its path; a missing history file is
        reported as such (the timeline cannot be followed without it).
        """
        missing: list[str] = []
        for tli in self.timelines:
            own = self.segments.get(tli, set()) | self.partials.get(tli, set())
            if tli == 1 or not own:
                continue
            if tli not in self.histories:
                missing.append(history_name(tli))
                continue
            parent, switch = self.histories[tli][-1]
            before = {
                n
                for n in self.segments.get(parent, set()) | self.partials.get(parent, set())
                if n <= segment_of_lsn(switch, self.segment_size)
            }
            if not before:
                continue  # nothing of the parent here: the repository starts on this timeline
            path = self.ancestry(tli)
            first = min(max(before) + 1, segment_of_lsn(switch, self.segment_size))
            for segno in range(first, min(own)):
                t = self.timeline_of_segno(path, segno)
                if segno not in self.segments.get(t, set()):
                    missing.append(Segment(t, segno).name(self.segment_size))
        return missing


def choose_timeline(chain: Chain, base_tli: int, base_lsn: int, requested: str | None) -> int:
    """The timeline a restore follows: the requested one, else the newest one with WAL."""
    if requested not in (None, "", "latest", "current"):
        try:
            tli = int(str(requested), 0) if str(requested).startswith("0x") else int(str(requested))
        except ValueError:
            raise ConfigError(
                f"--timeline must be a number, latest or current, not {requested!r}."
            ) from None
        if tli not in chain.timelines:
            known = ", ".join(str(t) for t in chain.timelines)
            raise CheckFailed(
                f"Timeline {tli} is not in the repository (it holds timelines {known})."
            )
        if not chain.leads_from(tli, base_tli, base_lsn):
            raise CheckFailed(
                f"Timeline {tli} does not lead from the base backup (timeline {base_tli}, "
                f"{format_lsn(base_lsn)}): it branched off before the backup or elsewhere."
            )
        return tli
    if requested == "current":
        return base_tli
    candidates = [
        t
        for t in chain.timelines
        if (chain.segments.get(t) or chain.partials.get(t))
        and chain.leads_from(t, base_tli, base_lsn)
    ]
    return max(candidates) if candidates else base_tli
