"""``pgdr wal find``: the moment of damage, read from the archived WAL with ``pg_waldump``.

No triggers or audit tables: every change to a table's rows is in the WAL. The segments of the
window (from the newest base backup that ended before ``--since``, or the oldest segment, to the
newest WAL, the streamer's partial segment included) are opened and authenticated into a private
(0700) temporary directory, removed afterwards, and read by the ``pg_waldump`` of the server's
major version. Heap records touching the table's files count rows per transaction (DELETE,
UPDATE/HOT_UPDATE, INSERT/MULTI_INSERT); commit and abort records give each transaction's fate
and commit time (subtransactions folded into their top transaction).

The table's file is resolved as of the window, not only as of now: when a transaction in the
window created the table's current file (``Storage CREATE``) and its commit dropped the table's
original file (its OID, ``rels:``), that transaction was a TRUNCATE (new file empty) or a rewrite
such as VACUUM FULL (new file written), and the records of the original file are counted too. A
file rewritten more than once in the window is followed one step; the report says so.

Invariants: nothing is written anywhere but the private temporary directory; a window the
repository cannot cover (``--since`` before its WAL, ``--until`` after it) is refused in one
sentence; the report names the transaction that stands out and the exact restore commands.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from pgdr.backup.chunks import private_dir
from pgdr.backup.manifest import Manifest
from pgdr.cluster import installation_for_major
from pgdr.core.connect import connect
from pgdr.core.errors import CheckFailed, ConfigError, RuntimeFailure
from pgdr.core.names import join_name, split_table_name
from pgdr.core.time import user_moment
from pgdr.wal.archive import WalArchive
from pgdr.wal.chain import Chain
from pgdr.wal.names import Segment, parse_lsn
from pgdr.wal.server import ServerInfo, server_info
from pgdr.wal.status import newest_wal_time
from pgdr.wal.transfer import fetch_bytes
from pgdr.wal.waldump import waldump_lines

OPS = ("delete", "update", "insert", "truncate")
RECORD_RE = re.compile(
    r"^rmgr: (\S+)\s+len \(rec/tot\):\s*\d+/\s*\d+, tx:\s*(\d+), lsn: ([0-9A-F]+/[0-9A-F]+),"
    r" prev [0-9A-F]+/[0-9A-F]+, desc: (.*)$"
)
BLOCK_RE = re.compile(r"rel (\d+)/(\d+)/(\d+)( fork \w+)?")
END_RE = re.compile(r"^(COMMIT|ABORT)(?:_PREPARED)? (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
DELETE_FLAGS_RE = re.compile(r"flags:? 0x([0-9A-Fa-f]{2})")  # "flags: 0x10" (16+), "flags 0x10"
DELETE_IS_SUPER = 0x08  # XLH_DELETE_IS_SUPER: a speculative insertion removed again
DELETE_IS_PARTITION_MOVE = 0x10  # XLH_DELETE_IS_PARTITION_MOVE: UPDATE to another partition
HEAP_OPS = {
    "DELETE": "delete",
    "UPDATE": "update",
    "HOT_UPDATE": "update",
    "INSERT": "insert",
    "INSERT+INIT": "insert",
    "MULTI_INSERT": "insert",
    "MULTI_INSERT+INIT": "insert",
}


@dataclass(frozen=True)
class RelFile:
    """A relation holding rows: its name, OID and current file."""

    qualified: str
    oid: int
    filenode: int


@dataclass(frozen=True)
class TableFile:
    """Where a table's rows live: the database's OID and the table's own file, or each leaf
    partition's for a partitioned table (which has none)."""

    qualified: str
    database_oid: int
    parts: tuple[RelFile, ...]
    partitioned: bool = False
    unlogged: tuple[str, ...] = ()  # partitions whose changes are in no WAL


@dataclass
class Transaction:
    xid: int
    status: str = "in progress"  # committed, aborted
    commit_time: str | None = None
    first_lsn: str = ""
    end_lsn: str | None = None
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OPS[:3], 0))
    truncate: bool = False
    rewrite: bool = False
    audit: dict[str, Any] | None = None  # from the pgdr_audit trail: role, at, ops, rows

    @property
    def ops(self) -> list[str]:
        found = [op for op in OPS[:3] if self.rows[op]]
        return found + (["truncate"] if self.truncate else [])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ops": self.ops}


@dataclass
class FindReport:
    table: str
    since: str | None
    until: str | None
    timeline: int
    segments: list[str]
    filenodes: list[int]
    transactions: list[Transaction]
    suspect: int | None = None
    restore_commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def suspect_transaction(self) -> Transaction | None:
        return next((t for t in self.transactions if t.xid == self.suspect), None)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["transactions"] = [t.as_dict() for t in self.transactions]
        return data


def parse_moment(text: str | None, option: str) -> datetime | None:
    return None if text is None else user_moment(text, option)


# The table itself, or each leaf partition of a partitioned one: its schema, name, OID, file.
_FILES = (
    "SELECT n.nspname, c.relname, c.oid, pg_relation_filenode(c.oid), c.relpersistence"
    " FROM pg_class t JOIN pg_namespace tn ON tn.oid = t.relnamespace,"
    " LATERAL (SELECT relid FROM pg_partition_tree(t.oid) WHERE isleaf AND t.relkind = 'p'"
    " UNION ALL SELECT t.oid WHERE t.relkind = 'r') leaf"
    " JOIN pg_class c ON c.oid = leaf.relid JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE tn.nspname = %s AND t.relname = %s AND t.relkind IN ('r', 'p') ORDER BY c.oid"
)


def table_file(conninfo: str, table: str) -> TableFile:
    """The table's files (its own, or its leaf partitions'), as the live database knows them."""
    schema, name = split_table_name(table)
    qualified = join_name(schema, name)
    try:
        with connect(conninfo, autocommit=True, raw_errors=True) as conn:
            rows = conn.execute(_FILES, (schema, name)).fetchall()
            kind = conn.execute(
                "SELECT c.relkind, d.oid FROM pg_class c JOIN pg_namespace n"
                " ON n.oid = c.relnamespace, pg_database d WHERE n.nspname = %s"
                " AND c.relname = %s AND c.relkind IN ('r', 'p')"
                " AND d.datname = current_database()",
                (schema, name),
            ).fetchone()
    except psycopg.Error as exc:
        raise RuntimeFailure(f"Cannot read the table's catalog entry: {exc}".strip()) from exc
    if kind is None:
        raise ConfigError(
            f"Table {qualified} does not exist in the database now; wal find "
            "follows tables that exist (restore a copy from before it was dropped to look at it)."
        )
    foreign = [join_name(r[0], r[1]) for r in rows if r[3] is None]
    if foreign:
        raise ConfigError(
            f"Partition {foreign[0]} of {qualified} has no file on this server (a foreign "
            "table): its rows are not in this server's WAL; name the other partitions one by one."
        )
    if not rows:
        raise ConfigError(f"Partitioned table {qualified} has no partition: no row to look for.")
    unlogged = tuple(join_name(r[0], r[1]) for r in rows if r[4] == "u")
    if len(unlogged) == len(rows):
        raise ConfigError(
            f"Table {qualified} is unlogged: its changes are not written to the WAL, so wal "
            "find cannot see them."
        )
    parts = tuple(RelFile(join_name(r[0], r[1]), int(r[2]), int(r[3])) for r in rows)
    # named in full: undelete puts rows back into exactly this table, whatever search_path says
    return TableFile(qualified, int(kind[1]), parts, kind[0] == "p", unlogged)


def _start_segment(chain: Chain, tli: int, backups: list[Manifest], since: datetime | None) -> int:
    """Where reading starts: the newest backup that ended before ``since``, else the oldest WAL."""
    size = chain.segment_size
    before = [
        m for m in backups if since is not None and m.stop_datetime <= since and m.timeline <= tli
    ]
    if before:
        return parse_lsn(before[-1].start_lsn) // size
    stored = chain.segments.get(tli, set()) | chain.partials.get(tli, set())
    if not stored:
        raise CheckFailed(f"The repository holds no WAL of timeline {tli}.")
    return min(stored)


def fetch_window(
    archive: WalArchive, segments: list[tuple[Segment, bool]], into: Path
) -> list[str]:
    """Open every segment (authenticated) into ``into``; returns their names."""
    names = []
    for segment, partial in segments:
        name = segment.name(archive.segment_size)
        (into / name).write_bytes(fetch_bytes(archive, name, allow_partial=partial))
        names.append(name)
    return names


class _Reader:
    """Folds pg_waldump records into per-transaction row counts for the table's files."""

    def __init__(self, table: TableFile) -> None:
        self.table = table
        self.files = {part.filenode for part in table.parts}
        self.counts: dict[int, dict[tuple[str, int], int]] = {}  # xid -> (op, file) -> rows
        self.first: dict[int, str] = {}  # xid -> LSN of its first record touching the table
        self.ends: dict[int, tuple[str, str, str, list[int]]] = {}  # xid: status, time, lsn, rels
        self.parent: dict[int, int] = {}
        self.created: dict[int, int] = {}  # filenode -> xid that created it
        self.written: dict[int, set[int]] = {}  # filenode -> xids that wrote a full page image
        self.first_time: str | None = None

    def feed(self, lines: Iterable[str]) -> None:
        for line in lines:
            match = RECORD_RE.match(line.rstrip("\n"))
            if match is None:
                continue
            rmgr, xid, lsn, desc = (
                match.group(1),
                int(match.group(2)),
                match.group(3),
                match.group(4),
            )
            if rmgr == "Transaction":
                self._end(xid, lsn, desc)
            elif rmgr == "Storage" and desc.startswith("CREATE "):
                node = desc.split()[1].rsplit("/", 1)[-1]
                if node.isdigit():
                    self.created[int(node)] = xid
            elif rmgr in ("Heap", "Heap2"):
                self._heap(xid, lsn, desc)
            elif rmgr == "XLOG" and desc.startswith("FPI"):
                for node in self._nodes(desc):
                    self.written.setdefault(node, set()).add(xid)

    def _nodes(self, desc: str) -> set[int]:
        return {
            int(m.group(3))
            for m in BLOCK_RE.finditer(desc)
            if int(m.group(2)) == self.table.database_oid and not m.group(4)
        }

    def _heap(self, xid: int, lsn: str, desc: str) -> None:
        op = HEAP_OPS.get(desc.split(" ", 1)[0])
        nodes = self._nodes(desc)
        if op is None or xid == 0 or not nodes:
            return
        if op == "delete":
            flags = DELETE_FLAGS_RE.search(desc)
            bits = int(flags.group(1), 16) if flags else 0
            if bits & DELETE_IS_SUPER:  # an ON CONFLICT insertion taken back, not a deletion
                return
            if bits & DELETE_IS_PARTITION_MOVE:  # the row moved to another partition
                op = "update"
        self.first.setdefault(xid, lsn)
        count = 1
        if "ntuples:" in desc:
            count = int(desc.split("ntuples:", 1)[1].split(",", 1)[0])
        counts = self.counts.setdefault(xid, {})
        key = (op, min(nodes))
        counts[key] = counts.get(key, 0) + count

    def _end(self, xid: int, lsn: str, desc: str) -> None:
        match = END_RE.match(desc)
        if match is None:
            return
        status = "committed" if match.group(1) == "COMMIT" else "aborted"
        moment = match.group(2).replace(" ", "T") + "Z"
        if self.first_time is None:
            self.first_time = moment
        rels = []
        if "; rels:" in desc:
            for item in desc.split("; rels:", 1)[1].split(";", 1)[0].split():
                node = item.rsplit("/", 1)[-1]
                if node.isdigit():
                    rels.append(int(node))
        if "; subxacts:" in desc:
            for sub in desc.split("; subxacts:", 1)[1].split(";", 1)[0].split():
                if sub.isdigit():
                    self.parent[int(sub)] = xid
        self.ends[xid] = (status, moment, lsn, rels)

    def follow_files(self, notes: list[str]) -> dict[int, str]:
        """The table's files in the window, and the transactions that truncated/rewrote it."""
        changes: dict[int, str] = {}
        if self.table.partitioned:
            notes.append(
                f"{self.table.qualified} is partitioned: the WAL of its "
                f"{len(self.table.parts)} partitions of now was read; a partition dropped or "
                "detached in the window is not among them."
            )
        if self.table.unlogged:
            notes.append(
                f"Unlogged, so not in the WAL: {', '.join(self.table.unlogged)}; "
                "their changes are not counted."
            )
        for part in self.table.parts:
            self._follow(part, changes, notes)
        return changes

    def _follow(self, part: RelFile, changes: dict[int, str], notes: list[str]) -> None:
        """Follow one relation's file back through a TRUNCATE or rewrite in the window."""
        node = part.filenode
        creator = self.created.get(node)
        if creator is None:
            return
        dropped = self.ends.get(creator, ("", "", "", []))[3]
        if part.oid in dropped and part.oid != node:
            self.files.add(part.oid)
            changes[creator] = "rewrite" if creator in self.written.get(node, set()) else "truncate"
            if part.oid in self.created:
                notes.append(
                    f"The original file of {part.qualified} was itself created in the window; "
                    "older rewrites were not followed."
                )
        elif part.oid == node or not dropped:
            notes.append(
                f"{part.qualified} was created in the window (transaction {creator}); "
                "nothing before it concerns this table."
            )
        else:
            notes.append(
                f"{part.qualified} was rewritten more than once; only its current file "
                f"({node}) was read."
            )

    def transactions(self, notes: list[str]) -> list[Transaction]:
        changes = self.follow_files(notes)
        merged: dict[int, Transaction] = {}
        for xid in set(self.counts) | set(changes):
            top = self.parent.get(xid, xid)
            tx = merged.setdefault(top, Transaction(top))
            first = self.first.get(xid) or self.ends[xid][2]
            if not tx.first_lsn or parse_lsn(first) < parse_lsn(tx.first_lsn):
                tx.first_lsn = first
            for (op, node), rows in self.counts.get(xid, {}).items():
                if node in self.files:
                    tx.rows[op] += rows
            tx.truncate = tx.truncate or changes.get(xid) == "truncate"
            tx.rewrite = tx.rewrite or changes.get(xid) == "rewrite"
        result = []
        for tx in merged.values():
            if not tx.ops and not tx.rewrite:
                continue
            end = self.ends.get(tx.xid)
            if end is not None:
                tx.status, tx.commit_time, tx.end_lsn = end[0], end[1], end[2]
            result.append(tx)
        return sorted(result, key=lambda t: parse_lsn(t.first_lsn))


def _in_window(tx: Transaction, since: datetime | None, until: datetime | None) -> bool:
    if tx.commit_time is None:
        return until is None
    moment = datetime.fromisoformat(tx.commit_time.replace("Z", "+00:00"))
    return (since is None or moment >= since) and (until is None or moment <= until)


def _suspect(transactions: list[Transaction], op: str | None) -> Transaction | None:
    committed = [t for t in transactions if t.status == "committed"]
    if not committed:
        return None
    if op in (None, "delete", "truncate") and any(t.truncate for t in committed):
        return next(t for t in committed if t.truncate)
    key = "update" if op == "update" else "insert" if op == "insert" else "delete"
    best = max(committed, key=lambda t: t.rows[key])
    return best if best.rows[key] else None


def _check_window(
    archive: WalArchive,
    reader: _Reader,
    since: datetime | None,
    until: datetime | None,
    covered_from_start: bool,
) -> None:
    """Refuse a window the repository's WAL does not cover. The start is covered when reading
    began at a base backup that ended before ``since``, at the cluster's first segment, or at
    a commit no later than ``since``."""
    newest = newest_wal_time(archive)
    if until is not None and newest is not None and until.timestamp() > newest:
        end = datetime.fromtimestamp(newest, UTC)
        raise CheckFailed(
            f"The repository holds WAL up to {end:%Y-%m-%d %H:%M:%S} UTC; --until is later, "
            "so that part of the window is not in the repository."
        )
    if since is None or covered_from_start:
        return
    first = reader.first_time
    if first is None or datetime.fromisoformat(first.replace("Z", "+00:00")) > since:
        raise CheckFailed(
            f"The repository's WAL begins {'at ' + first if first else 'after --since'} (its "
            "first commit), later than --since; that part of the window is not in the repository."
        )


def audit_trail(conninfo: str, transactions: list[Transaction]) -> None:
    """Who ran each transaction, when ``pgdr audit install`` left a ``public.pgdr_audit`` trail
    (matched on the low 32 bits of its ``txid``); nothing when there is none. Reads only."""
    xids = [t.xid for t in transactions]
    with connect(conninfo, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass('public.pgdr_audit') IS NOT NULL").fetchone()
        if not xids or not found or not found[0]:
            return
        rows = conn.execute(
            "SELECT mod(txid, 4294967296), min(role), min(at), string_agg(DISTINCT op, ','),"
            " count(*) FROM public.pgdr_audit WHERE mod(txid, 4294967296) = ANY(%s) GROUP BY 1",
            (xids,),
        ).fetchall()
    by_xid = {
        int(r[0]): {"role": r[1], "at": r[2].isoformat(), "ops": r[3], "rows": int(r[4])}
        for r in rows
    }
    for tx in transactions:
        tx.audit = by_xid.get(tx.xid)


def find_changes(
    archive: WalArchive,
    backups: list[Manifest],
    conninfo: str,
    table: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    op: str | None = None,
) -> FindReport:
    """Every transaction in the window that changed ``table``'s rows; the one standing out."""
    if op is not None and op not in OPS:
        raise ConfigError(f"--op must be one of {', '.join(OPS)}.")
    if since and until and since >= until:
        raise ConfigError("--since must be before --until.")
    info: ServerInfo = server_info(conninfo)
    if info.system_identifier != archive.system_identifier:
        raise ConfigError(
            f"The repository holds WAL of database system {archive.system_identifier}, not of "
            f"this server ({info.system_identifier})."
        )
    file = table_file(conninfo, table)
    chain = Chain.load(archive)
    tli = info.timeline
    start = _start_segment(chain, tli, backups, since)
    segments = chain.needed(tli, start * chain.segment_size, None, use_partial=True)
    if not segments:
        raise CheckFailed("The repository holds no WAL of this server to search.")
    tool = installation_for_major(info.major).tool("pg_waldump")
    reader = _Reader(file)
    with private_dir("pgdr-walfind-") as tmp:
        names = fetch_window(archive, segments, tmp)
        reader.feed(waldump_lines(tool, tmp, [names[0], names[-1]]))
    from_start = segments[0][0].segno == 1 and segments[0][0].timeline == 1
    from_backup = any(since is not None and m.stop_datetime <= since for m in backups)
    _check_window(archive, reader, since, until, from_start or from_backup)
    notes: list[str] = []
    found = [t for t in reader.transactions(notes) if _in_window(t, since, until)]
    if op is not None:
        found = [t for t in found if op in t.ops]
    audit_trail(conninfo, found)
    report = FindReport(
        file.qualified,
        since.isoformat() if since else None,
        until.isoformat() if until else None,
        tli,
        names,
        sorted(reader.files),
        found,
        notes=notes,
    )
    suspect = _suspect(found, op)
    if suspect is not None:
        report.suspect = suspect.xid
        report.restore_commands = [
            f"pgdr restore --target-xid {suspect.xid} --exclusive --new-cluster",
            f"pgdr restore --target-lsn {suspect.first_lsn} --new-cluster",
        ]
    return report
