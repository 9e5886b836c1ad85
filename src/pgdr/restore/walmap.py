"""Which pages of a data directory changed since a backup, read from the WAL (``restore --delta
--by-wal``), so that a delta restore need not read every page to find them.

On a primary, a page of a relation's main fork is only ever changed through a WAL record naming
it (with data checksums on, hint bits too: the first hint after a checkpoint logs the page; a
standby writes hints without WAL and is refused). So a page that no
record names from the earlier of the backup's start and the directory's last checkpoint to the
end of the directory's WAL holds the same bytes in the backup and in the directory: it is left
alone, unread. This is what ``pg_rewind`` relies on. ``pg_waldump`` lists the records from the
directory's own ``pg_wal``, with the repository's copies (opened into a private temporary
directory) for the segments it no longer has, or not yet (a copy behind). Only the records of
resource managers that can name pages are listed: the others carry the only text a user can
put in the WAL, which could pass for records. A directory with
a ``backup_label`` (a restore not yet started) is read from the label's start: its
``pg_control``, copied last, may name a later checkpoint.

A relation file of another size is cut to the backup's size and, if shorter, given the pages it
lacks, as ``pg_rewind`` does: a relation grows without a record of its own, but every page it
gains is named when it is first written, and it shrinks only by a ``Storage`` record.

The WAL is not trusted for what it does not track, and those files are compared as by the plain
delta: the other forks (free space and visibility maps, init forks), files that are not relation
data, relations created or truncated in the window (``Storage`` records), and the whole
directory of a database created or dropped in it (``Database`` records).

The WAL says nothing (and the delta reads every page, with the reason in its report) when the
directory has no ``pg_control`` (an earlier delta stopped half-way), is another database system
or on another timeline, runs without data checksums or with ``wal_level = minimal``, when the
backup's own ``pg_control`` says it was taken without checksums (``pg_checksums --enable``
rewrites pages without WAL), when the WAL of the window is missing, ends before the directory's
last checkpoint or the backup's end, lacks the backup's end record (a standby's backup, or a
directory whose history left the backup's) or, where the directory's segments and the
repository's meet, differs from the repository's (a restored copy that ran on by itself), when
it is a standby (running or stopped in recovery: a standby writes hint bits on pages replay
left dirty without WAL), when the window holds a ``Tablespace`` record or one of a resource
manager pgdr does not know (an extension's), when its ``pg_wal`` holds a later timeline or a
``.partial`` of its own (promoted after its last checkpoint), when a relation file the WAL
names no page of was written after the backup ended (written outside the WAL), or when the
window is larger than an eighth of the backup's data and 256 MiB (reading the files is then
quicker than reading the WAL). Unlogged relations (with an init fork) are compared.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from pgdr.backup.chunks import private_dir, read_file
from pgdr.backup.manifest import Manifest
from pgdr.backup.repository import Repository
from pgdr.cluster import installation_for_major
from pgdr.core import runner
from pgdr.core.errors import PgdrError, RuntimeFailure
from pgdr.crypto import DataKey
from pgdr.wal.archive import WalArchive, repository_archive
from pgdr.wal.chain import Chain
from pgdr.wal.names import format_lsn, parse_lsn, parse_segment, segment_name
from pgdr.wal.transfer import fetch_bytes, fetch_segment
from pgdr.wal.waldump import waldump_text

DEFAULT_TABLESPACE, GLOBAL_TABLESPACE = 1663, 1664
WINDOW_SHARE = 8  # the WAL is read only when it is at most 1/8 of the backup's data,
WINDOW_FLOOR = 256 << 20  # or at most 256 MiB (a second or two of pg_waldump)
RELATION_FILE = re.compile(
    r"^(?:base/(?P<db>\d+)|global|pg_tblspc/(?P<spc>\d+)/[^/]+/(?P<tdb>\d+))"
    r"/(?P<rel>\d+)(?:\.(?P<seg>\d+))?$"
)
# the resource managers whose records can name relation pages (or create, drop or truncate
# relation files): only theirs are listed. The others are left out, and with them the only
# text a user can put in a record (a logical message's prefix, a prepared transaction's name),
# which could otherwise pass for records in pg_waldump's listing
PAGE_RMGRS = (
    "XLOG Storage Database Tablespace Heap2 Heap Btree Hash Gin Gist Sequence SPGist BRIN Generic"
)
# every resource manager pgdr knows: any other (an extension's own WAL) may change relation
# files without naming their pages, as pg_rewind also refuses
KNOWN_RMGRS = frozenset(
    f"{PAGE_RMGRS} Transaction CLOG MultiXact RelMap Standby CommitTs ReplicationOrigin "
    "LogicalMessage".split()
)
STATS_SPAN = re.compile(r"^WAL statistics between \S+ and ([0-9A-F]+/[0-9A-F]+):", re.MULTILINE)
STATS_ROW = re.compile(r"^(\S+)\s+(\d+)\b", re.MULTILINE)  # "Heap  2067 ( 58.18) ...", "Total ..."
LABEL_START = re.compile(r"^START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)", re.MULTILINE)
LABEL_TIMELINE = re.compile(r"^START TIMELINE: (\d+)", re.MULTILINE)
MAIN_BLOCK = re.compile(r"rel (\d+/\d+/\d+)(?: fork main)? blk (\d+)")  # other forks: "fork vm"
# "rmgr: " begins every record's line and nothing else; searched for without "^" (which
# Python's re tries at every position under MULTILINE: ten times slower here)
SPECIAL_RMGRS = ("Storage", "Database", "Tablespace")
SPECIAL = re.compile(
    rf"rmgr: ({'|'.join(SPECIAL_RMGRS)})\s[^\n]*?, lsn: ([0-9A-F]+/[0-9A-F]+), "
    r"[^\n]*?desc: ([^\n]*)"
)
BACKUP_END = re.compile(r"rmgr: XLOG\s[^\n]*?desc: BACKUP_END ([0-9A-F]+/[0-9A-F]+)")
DIRECTORY = re.compile(r"(\d+)/(\d+)")
END_AT = re.compile(r"invalid record length at ([0-9A-F]+/[0-9A-F]+)")
PAGE_AT = re.compile(r"(?:unexpected pageaddr|invalid magic number).*offset (\d+)")
STORAGE_PATH = re.compile(r"((?:base|global|pg_tblspc)/\S+?)(?:_\w+)?(?:\s|$)")

Relation = tuple[int, int, int]  # tablespace, database, file node


class NoMap(PgdrError):
    """The WAL cannot say which pages changed; the sentence says why."""


@dataclass(frozen=True)
class Control:
    """What ``pg_controldata`` says of a data directory."""

    system_identifier: str
    timeline: int
    redo: int
    checkpoint: int
    min_recovery: int
    checksums: bool
    block_size: int
    segment_blocks: int
    segment_size: int
    wal_level: str
    state: str

    @classmethod
    def parse(cls, text: str) -> Control:
        fields = {
            key.strip(): value.strip()
            for key, _, value in (line.partition(":") for line in text.splitlines())
        }
        return cls(
            system_identifier=fields["Database system identifier"],
            timeline=int(fields["Latest checkpoint's TimeLineID"]),
            redo=parse_lsn(fields["Latest checkpoint's REDO location"]),
            checkpoint=parse_lsn(fields["Latest checkpoint location"]),
            min_recovery=parse_lsn(fields["Minimum recovery ending location"]),
            checksums=fields["Data page checksum version"] != "0",
            block_size=int(fields["Database block size"]),
            segment_blocks=int(fields["Blocks per segment of large relation"]),
            segment_size=int(fields["Bytes per WAL segment"]),
            wal_level=fields["wal_level setting"],
            state=fields["Database cluster state"],
        )


def relation_of(path: str) -> tuple[Relation, int] | None:
    """The relation (main fork) and segment number a data-directory path holds, if any."""
    match = RELATION_FILE.match(path)
    if match is None:
        return None
    if match["spc"]:
        relation = (int(match["spc"]), int(match["tdb"]), int(match["rel"]))
    elif match["db"]:
        relation = (DEFAULT_TABLESPACE, int(match["db"]), int(match["rel"]))
    else:
        relation = (GLOBAL_TABLESPACE, 0, int(match["rel"]))
    return relation, int(match["seg"] or 0)


@dataclass
class ChangedPages:
    """The main-fork pages the WAL names from ``start`` to ``end`` (the end of the last valid
    record)."""

    start: int
    segment_blocks: int
    end: int = 0
    records: int = 0
    _named: dict[str, set[int]] = field(default_factory=dict)  # "1663/5/16384": pages
    whole: set[Relation] = field(default_factory=set)  # created or truncated: compared in full
    databases: set[tuple[int, int]] = field(default_factory=set)  # created or dropped
    unlogged: set[Relation] = field(default_factory=set)  # no WAL at all: compared in full
    backup_ends: set[int] = field(default_factory=set)  # start LSNs of BACKUP_END records
    _pages: dict[str, list[int] | None] = field(default_factory=dict, repr=False)  # pages_of's

    @property
    def blocks(self) -> dict[Relation, set[int]]:
        """The named pages of each relation's main fork."""
        return {_relation_key(relation): pages for relation, pages in self._named.items()}

    def pages_of(self, path: str) -> list[int] | None:
        """The changed pages (numbered within the file) of ``path``, or None when the WAL does
        not track the file (compare it in full). Worked out once per file."""
        if path not in self._pages:
            self._pages[path] = self._find_pages(path)
        return self._pages[path]

    def _find_pages(self, path: str) -> list[int] | None:
        found = relation_of(path)
        if found is None:
            return None
        relation, segment = found
        if relation in self.whole or relation in self.unlogged or relation[:2] in self.databases:
            return None
        low = segment * self.segment_blocks
        return sorted(
            b - low
            for b in self._named.get("/".join(map(str, relation)), ())
            if low <= b < low + self.segment_blocks
        )

    def feed(self, texts: Iterable[str]) -> None:
        """Fold ``pg_waldump``'s listing in, given as texts of whole lines (blocks, as
        :func:`waldump_text` reads them, or single lines): the regular expressions run over a
        block's text (hundreds of thousands of records take seconds line by line)."""
        self._pages.clear()
        for text in texts:
            self._feed_text(text if text.endswith("\n") else text + "\n")

    def _feed_text(self, text: str) -> None:
        # the rare records are looked for only in a text that holds them (a plain search runs
        # at memory speed; a regular expression tries every record)
        special = any(f"rmgr: {rmgr}" in text for rmgr in SPECIAL_RMGRS)
        for rmgr, lsn, desc in SPECIAL.findall(text) if special else ():
            if rmgr == "Tablespace":
                raise NoMap(f"the WAL at {lsn} creates or drops a tablespace")
            if rmgr == "Database":
                self.databases.update((int(s), int(d)) for s, d in DIRECTORY.findall(desc))
            else:
                self.whole.update(_storage_relations(desc))
        if "BACKUP_END" in text:
            self.backup_ends.update(parse_lsn(lsn) for lsn in BACKUP_END.findall(text))
        # each page once: records name the same pages over and over (150 inserts per page)
        for relation, block in set(MAIN_BLOCK.findall(text)):
            self._named.setdefault(relation, set()).add(int(block))

    def count(self, statistics: str) -> None:
        """Take the records' number and end from ``pg_waldump --stats``; refuse records of a
        resource manager pgdr does not follow (an extension's own WAL)."""
        found = STATS_SPAN.search(statistics)
        if found is None:
            raise NoMap("pg_waldump --stats printed no span of WAL")
        self.end = max(self.end, parse_lsn(found[1]))
        for name, count in STATS_ROW.findall(statistics):
            if name == "Total":
                self.records = int(count)
            elif name not in KNOWN_RMGRS and int(count):
                raise NoMap(f"the WAL holds {count} records of resource manager {name}")

    def describe(self) -> str:
        pages = sum(len(b) for b in self.blocks.values())
        return (
            f"{self.records:,} WAL records from {format_lsn(self.start)} to "
            f"{format_lsn(self.end)} name {pages:,} pages of {len(self.blocks):,} relations"
        )


def _relation_key(text: str) -> Relation:
    """``"1663/5/16384"`` as a relation (tablespace, database, file node)."""
    spc, db, rel = text.split("/")
    return int(spc), int(db), int(rel)


def _storage_relations(desc: str) -> set[Relation]:
    """The relations a ``Storage`` record (CREATE or TRUNCATE) names."""
    found = set()
    for path in STORAGE_PATH.findall(desc):
        relation = relation_of(path)
        if relation is not None:
            found.add(relation[0])
    return found


def read_control(manifest: Manifest, directory: Path) -> Control:
    """``pg_controldata`` of ``directory`` (by the backup's major version)."""
    if not (directory / "global" / "pg_control").is_file():
        raise NoMap("it has no global/pg_control (an earlier delta restore stopped half-way?)")
    tool = installation_for_major(manifest.pg_major).tool("pg_controldata")
    result = runner.run(
        [tool, "-D", str(directory)], timeout_s=60, check=False, env=dict(os.environ, LC_ALL="C")
    )
    if result.returncode != 0:
        raise NoMap(runner.sentence("pg_controldata", result.stderr))
    try:
        return Control.parse(result.stdout)
    except (KeyError, ValueError) as exc:
        raise NoMap(f"pg_controldata's report lacks {exc}") from exc


def backup_control(repo: Repository, manifest: Manifest, data_key: DataKey) -> Control:
    """What the backup's own ``global/pg_control`` says (opened into a private directory)."""
    entry = next((f for f in manifest.files if f.path == "global/pg_control"), None)
    if entry is None:
        raise NoMap("the backup holds no global/pg_control")
    data = read_file(repo, manifest, data_key, entry)
    with private_dir("pgdr-delta-control-") as directory:
        (directory / "global").mkdir()
        (directory / "global" / "pg_control").write_bytes(data)
        return read_control(manifest, directory)


def _check_same_history(manifest: Manifest, control: Control, backup: Control) -> None:
    if control.system_identifier != manifest.system_identifier:
        raise NoMap(f"it is database system {control.system_identifier}, not the backup's")
    if control.timeline != manifest.timeline:
        raise NoMap(f"it is on timeline {control.timeline}, the backup on {manifest.timeline}")
    if not control.checksums:
        raise NoMap("it runs without data checksums, so hint bits change pages without WAL")
    if not backup.checksums:
        raise NoMap(
            "the backup was taken without data checksums (pg_checksums, since, rewrote every "
            "page without WAL)"
        )
    if control.wal_level == "minimal":
        raise NoMap("it runs with wal_level minimal, which leaves some writes out of the WAL")
    if (control.block_size, control.segment_blocks) != (backup.block_size, backup.segment_blocks):
        raise NoMap("its page or relation segment size differs from the backup's")


def _open_archive(repo: Repository) -> WalArchive | None:
    try:
        return repository_archive(repo)
    except PgdrError:
        return None  # no WAL in the repository: the directory's own pg_wal must do


def _spool(
    target: Path,
    repo: Repository,
    control: Control,
    window: tuple[int, int],
    into: Path,
    tool: Path,
) -> list[str]:
    """Segments ``window`` (first, last) into ``into``; their names, in order. Links to the
    directory's own, else opened from the repository; then the directory's own that follow (its
    pages can be no newer than its own WAL: the repository's later WAL is not read). Where the
    source changes, the two copies of the segment there must agree as far as both hold WAL
    (``tool``, pg_waldump, finds where the directory's ends): one history. Where the
    directory's WAL ends first (a replica behind), the repository's longer copy is used."""
    archive = _open_archive(repo)
    stored: set[int] = set()
    if archive is not None:
        chain = Chain.load(archive)
        stored = chain.segments.get(control.timeline, set())
        stored |= chain.partials.get(control.timeline, set())
    (segno, last), sources = window, list[Path | None]()
    while True:
        name = segment_name(control.timeline, segno, control.segment_size)
        own = target / "pg_wal" / name
        if own.is_file():
            (into / name).symlink_to(own)
            sources.append(own)
        elif archive is not None and segno in stored and segno <= last:
            (into / name).write_bytes(fetch_bytes(archive, name, allow_partial=True))
            sources.append(None)
        elif segno <= last:
            raise NoMap(f"WAL segment {name} is in neither its pg_wal nor the repository")
        else:
            break
        segno += 1
    for before, after in pairwise(sources):
        if before is not None and after is None:  # its WAL ends first: the repository's goes on
            (into / before.name).unlink()
            (into / before.name).write_bytes(_one_history(tool, archive, before, stored))
        elif before is None and after is not None:
            _one_history(tool, archive, after, stored)
    return sorted(p.name for p in into.iterdir())


def _one_history(tool: Path, archive: WalArchive | None, own: Path, stored: set[int]) -> bytes:
    """The repository's copy of the directory's segment ``own``, once both are found to hold
    the same WAL as far as both hold any: one history, not a restored copy that ran on by
    itself."""
    assert archive is not None
    if parse_segment(own.name, archive.segment_size).segno not in stored:
        raise NoMap(f"the repository lacks {own.name} to check that its WAL continues it")
    data, valid = fetch_segment(archive, own.name, allow_partial=True)
    common = min(valid, _wal_end(tool, own))
    with own.open("rb") as handle:
        if handle.read(common) != data[:common]:
            raise NoMap(
                f"its WAL segment {own.name} differs from the repository's: its history left "
                "the repository's (a restored copy that ran on by itself?)"
            )
    return data


def _wal_end(tool: Path, segment: Path) -> int:
    """Where the valid WAL in ``segment`` ends (its offset), as ``pg_waldump`` finds it."""
    with private_dir("pgdr-delta-end-") as alone:
        (alone / segment.name).symlink_to(segment)
        result = runner.run(
            [tool, "--quiet", "--path", str(alone), segment.name],
            timeout_s=120,
            check=False,
            env=dict(os.environ, LC_ALL="C"),
        )
    size = segment.stat().st_size
    if result.returncode == 0 or "could not find file" in result.stderr:
        return size  # valid to its end
    found = END_AT.search(result.stderr) or PAGE_AT.search(result.stderr)
    if found is None:
        raise NoMap(f"{runner.sentence('pg_waldump', result.stderr).rstrip('.')} ({segment.name})")
    if found.re is END_AT:
        return parse_lsn(found[1]) % size
    return int(found[1])


def _check_not_a_standby(target: Path, control: Control) -> None:
    """Refuse a standby (running or stopped in recovery, or set up to recover): on a standby,
    a hint bit set on a page replay left dirty reaches the disk with it, without WAL."""
    signals = [name for name in ("standby.signal", "recovery.signal") if (target / name).exists()]
    if "recovery" in control.state or signals:
        why = signals[0] if signals else f"its state is {control.state!r}"
        raise NoMap(f"it is a standby ({why}): a standby writes hint bits without WAL")


def _check_no_later_timeline(target: Path, control: Control) -> None:
    """Refuse a directory promoted (or switched timeline) after its last checkpoint: that
    checkpoint still names the old timeline, and the old timeline's WAL (the repository's
    too) knows nothing of what was done since."""
    for path in sorted((target / "pg_wal").iterdir()):
        name = path.name
        if len(name) < 8 or not all(c in "0123456789ABCDEF" for c in name[:8]):
            continue
        tli = int(name[:8], 16)
        if tli > control.timeline or (tli == control.timeline and name.endswith(".partial")):
            raise NoMap(
                f"its pg_wal holds {name}: it changed timeline after its last checkpoint, "
                f"which still names timeline {control.timeline}"
            )


def unlogged_relations(manifest: Manifest) -> set[Relation]:
    """The relations with an init fork (unlogged: none of their writes is in the WAL)."""
    found = set()
    for entry in manifest.files:
        if entry.path.endswith("_init"):
            relation = relation_of(entry.path.removesuffix("_init"))
            if relation is not None:
                found.add(relation[0])
    return found


def check_written_without_wal(target: Path, manifest: Manifest, changes: ChangedPages) -> None:
    """Refuse when a relation file the WAL names no page of was written after the backup
    ended: something wrote it outside the WAL (``pg_checksums --enable`` rewrites every page,
    and hint bits set while checksums were off are in no WAL), so the WAL is not the whole
    story. With checksums on throughout, every write after the backup is of a named page."""
    after = manifest.stop_datetime.timestamp()
    written = []
    for entry in manifest.files:
        if entry.kind != "file" or changes.pages_of(entry.path) != []:
            continue
        try:
            if (target / entry.path).lstat().st_mtime > after:
                written.append(entry.path)
        except FileNotFoundError:
            continue
    if written:
        raise NoMap(
            f"{len(written):,} relation files (e.g. {written[0]}) were written after the backup "
            "ended although the WAL names none of their pages: written outside the WAL"
        )


def label_start(target: Path, control: Control) -> int | None:
    """Where replay of ``target`` must start if it holds a ``backup_label`` (a restore not yet
    started, ``pg_basebackup``'s or ``pg_rewind``'s output): its pages are a copy taken from
    there on, and its ``pg_control``, copied last, may name a later checkpoint."""
    try:
        text = (target / "backup_label").read_text()
    except FileNotFoundError:
        return None
    start, timeline = LABEL_START.search(text), LABEL_TIMELINE.search(text)
    if start is None:
        raise NoMap("its backup_label names no START WAL LOCATION")
    if timeline is not None and int(timeline[1]) != control.timeline:
        raise NoMap(f"its backup_label starts on timeline {timeline[1]}")
    return parse_lsn(start[1])


def changed_pages(
    repo: Repository, manifest: Manifest, data_key: DataKey, target: Path
) -> ChangedPages:
    """The pages of ``target`` that may differ from backup ``manifest``'s, as the WAL names
    them; raises :class:`NoMap` with the reason when the WAL cannot say."""
    control = read_control(manifest, target)
    _check_same_history(manifest, control, backup_control(repo, manifest, data_key))
    _check_no_later_timeline(target, control)
    _check_not_a_standby(target, control)
    starts = [parse_lsn(manifest.start_lsn), control.redo, label_start(target, control)]
    start = min(lsn for lsn in starts if lsn is not None)
    need = max(parse_lsn(manifest.stop_lsn), control.checkpoint, control.min_recovery)
    data = sum(f.size for f in manifest.files if f.kind == "file")
    if need - start > max(data // WINDOW_SHARE, WINDOW_FLOOR):
        raise NoMap(
            f"its WAL since the backup ({(need - start) >> 20:,} MiB) is more than an eighth "
            "of the backup's data and 256 MiB: reading the files is quicker"
        )
    changes = ChangedPages(start, control.segment_blocks, unlogged=unlogged_relations(manifest))
    tool = installation_for_major(manifest.pg_major).tool("pg_waldump")
    size = control.segment_size
    with private_dir("pgdr-delta-wal-") as spool:
        names = _spool(target, repo, control, (start // size, need // size), spool, tool)
        # the first and last segments named: PostgreSQL 15's pg_waldump reads the segment size
        # from the first (else from any file, a zero-filled one among them)
        args = ["--timeline", str(control.timeline), "--start", format_lsn(start)]
        args += [names[0], names[-1]]
        try:
            changes.count("".join(waldump_text(tool, spool, [*args, "--stats"], recycled=True)))
            listed = [*args, *(f"--rmgr={rmgr}" for rmgr in PAGE_RMGRS.split())]
            changes.feed(waldump_text(tool, spool, listed, recycled=True))
        except RuntimeFailure as exc:
            raise NoMap(str(exc).rstrip(".")) from exc
    if changes.end < need:
        raise NoMap(f"its WAL ends at {format_lsn(changes.end)}, before {format_lsn(need)}")
    if parse_lsn(manifest.start_lsn) not in changes.backup_ends:
        raise NoMap(
            "its WAL does not hold the backup's end record (a backup of a standby, or a "
            "directory whose history left the backup's before it)"
        )
    check_written_without_wal(target, manifest, changes)
    return changes
