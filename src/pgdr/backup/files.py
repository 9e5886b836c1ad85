"""A base backup read straight from the data directory, by parallel workers (``--method files``).

When pgdr runs beside the server (the data directory is readable and its ``global/pg_control``
carries the server's system identifier), pgdr takes a non-exclusive backup itself:
``pg_backup_start`` on a held connection (which also holds a temporary replication slot, so the
WAL of the backup cannot be recycled), the files read by N workers, ``pg_backup_stop``, then the
WAL from the start to the stop segment copied from ``pg_wal``. The result is the *same* kind of
backup as the ``pg_basebackup`` stream: a tar archive (data files, ``backup_label``,
``tablespace_map``, the WAL, and a PostgreSQL ``backup_manifest`` that ``pg_verifybackup``
accepts) cut into fixed-size chunks, so the manifest and everything downstream (restore, verify,
PITR, retention, copies) are unchanged.

Invariants:
- The archive layout is planned before any byte is read: every member's header and offset is
  known, so chunk ``i`` (bytes ``[i*size, (i+1)*size)`` of the archive) is built, hashed, sealed
  and stored by any worker independently, and chunks are fixed-size like the stream's.
- A file that shrinks while it is read is padded with zeros to its planned size and one that
  grows is cut to it, as ``pg_basebackup`` does; WAL replay from the backup's start repairs both.
- Every file's digest is computed over exactly the bytes stored: each worker hashes the pieces
  of the files in its own chunk, and a file's digest combines them (``pgdr.backup.digest``).
- The backup label, WAL and ``backup_manifest`` come after the data files, once
  ``pg_backup_stop`` has returned; until the pgdr manifest is written the backup does not exist,
  and a killed run leaves only chunks that the next run removes (the server ends the backup and
  drops the slot when the connection goes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from pgdr.backup.digest import PIECES, PieceDigests, object_digest, piece_digest
from pgdr.backup.manifest import ChunkEntry, FileEntry, chunk_key
from pgdr.backup.repository import LOCK_REFRESH_S, Repository
from pgdr.core.connect import connect
from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.crypto import DataKey, parallel_map, seal

METHODS = ("auto", "files", "stream")
BLOCK = 512
# What pg_basebackup leaves out (src/backend/backup/basebackup.c): directories whose contents
# are skipped, files skipped anywhere, and name prefixes of temporary files.
SKIP_CONTENTS = frozenset(
    {
        "pg_stat_tmp",
        "pg_replslot",
        "pg_dynshmem",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_subtrans",
        "pg_wal",
    }
)
SKIP_FILES = frozenset(
    {
        "postmaster.pid",
        "postmaster.opts",
        "pg_internal.init",
        "postgresql.auto.conf.tmp",
        "current_logfiles.tmp",
        "backup_label",
        "tablespace_map",
        "backup_manifest",
    }
)
TEMP_PREFIX = "pgsql_tmp"


@dataclass(frozen=True)
class Locality:
    """Whether pgdr can read the server's data directory, and if not, why (one sentence)."""

    data_dir: Path | None
    reason: str


def _control_sysid(data_dir: Path) -> str:
    with (data_dir / "global" / "pg_control").open("rb") as handle:
        return str(int.from_bytes(handle.read(8), "little"))


def locate(conninfo: str, system_identifier: str, major: int) -> Locality:
    """The data directory if pgdr runs beside the server and can read it; else why not."""
    if major < 15:
        return Locality(None, f"PostgreSQL {major} has no pg_backup_start (15 or later needed)")
    try:
        with connect(conninfo, autocommit=True, raw_errors=True) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
    except psycopg.Error as exc:
        return Locality(None, f"the server does not show its data_directory ({exc})".strip())
    data_dir = Path(str(row[0])) if row else None
    if data_dir is None or not data_dir.is_absolute():
        return Locality(None, "the server does not show its data_directory")
    try:
        if _control_sysid(data_dir) != system_identifier:
            return Locality(None, f"{data_dir} here belongs to another database system")
        tablespaces = list((data_dir / "pg_tblspc").iterdir())
    except PermissionError:
        return Locality(
            None,
            f"{data_dir} is not readable by this user (uid {os.getuid()}); the server runs "
            "as its own service user",
        )
    except OSError:
        return Locality(None, f"{data_dir} is not on this machine")
    if tablespaces:
        return Locality(None, "the server has tablespaces outside its data directory")
    return Locality(data_dir, "")


def choose_method(method: str, locality: Locality, incremental: bool) -> tuple[str, str]:
    """``(method, note)``: ``files`` or ``stream``, and a sentence when ``auto`` fell back."""
    if method not in METHODS:
        raise ConfigError(f"Unknown backup method {method!r}; use one of {', '.join(METHODS)}.")
    if method == "stream":
        return "stream", ""
    why = "incremental backups come from pg_basebackup" if incremental else locality.reason
    if not why:
        return "files", ""
    if method == "files":
        raise ConfigError(f"The files backup method cannot be used: {why}.")
    return "stream", f"Streamed with pg_basebackup because {why}."


# ----- the planned archive ------------------------------------------------------------------
@dataclass
class Member:
    """One archive member: its header, and where its data comes from."""

    entry: FileEntry
    header: bytes
    source: Path | bytes | None = None  # a file to read, the bytes themselves, or no data
    mtime: float = 0.0


@dataclass
class Layout:
    """The archive as a list of members at known offsets; grows once (after the stop)."""

    members: list[Member] = field(default_factory=list)
    size: int = 0

    def add(self, path: str, kind: str, mode: int, mtime: float, size: int, **kw: object) -> None:
        info = tarfile.TarInfo(path)
        info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE}.get(kind, tarfile.SYMTYPE)
        info.mode, info.mtime, info.size = mode & 0o7777, int(mtime), size
        info.linkname = str(kw.get("linkname", ""))
        header = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
        entry = FileEntry(
            path=path,
            kind=kind,
            size=size,
            mode=mode & 0o7777,
            digest=None,
            offset=self.size + len(header),
            linkname=info.linkname,
        )
        source = kw.get("source")
        assert source is None or isinstance(source, Path | bytes)
        self.members.append(Member(entry, header, source, mtime))
        self.size = entry.offset + size + (-size) % BLOCK

    def close(self) -> None:
        """The end-of-archive marker."""
        self.members.append(
            Member(FileEntry("", "end", 0, 0, None, self.size + 2 * BLOCK), bytes(2 * BLOCK))
        )
        self.size += 2 * BLOCK


def _skipped(relative: str, name: str, is_dir: bool) -> bool:
    if name.startswith(TEMP_PREFIX):
        return True
    if not is_dir and name in SKIP_FILES:
        return True
    return relative.startswith("base/") and name.startswith("t") and "_" in name and not is_dir


def plan_data(data_dir: Path) -> Layout:
    """Every directory, file and symlink to back up, as pg_basebackup would (pg_control last)."""
    layout = Layout()
    control: tuple[Path, os.stat_result] | None = None
    for root, dirs, files in os.walk(data_dir):
        rel_root = Path(root).relative_to(data_dir).as_posix()
        rel_root = "" if rel_root == "." else rel_root + "/"
        for name in sorted(dirs):
            path = Path(root) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                dirs.remove(name)
                if name != "pg_wal":
                    layout.add(
                        rel_root + name,
                        "symlink",
                        0o777,
                        st.st_mtime,
                        0,
                        linkname=str(path.readlink()),
                    )
                    continue
            layout.add(rel_root + name, "dir", st.st_mode, st.st_mtime, 0)
            if rel_root == "" and name in SKIP_CONTENTS:
                with contextlib.suppress(ValueError):
                    dirs.remove(name)
        dirs.sort()
        for name in sorted(files):
            relative = rel_root + name
            path = Path(root) / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode) or _skipped(relative, name, False):
                continue
            if relative == "global/pg_control":
                control = (path, st)
                continue
            layout.add(relative, "file", st.st_mode, st.st_mtime, st.st_size, source=path)
    for sub in ("pg_wal/archive_status", "pg_wal/summaries"):
        if sub.endswith("status") or (data_dir / sub).is_dir():
            layout.add(sub, "dir", 0o700, time.time(), 0)
    if control is None:
        raise RuntimeFailure(f"{data_dir} has no global/pg_control.")
    path, st = control
    layout.add("global/pg_control", "file", st.st_mode, st.st_mtime, st.st_size, source=path)
    return layout


# ----- building chunks ----------------------------------------------------------------------
def _read_into(path: Path, view: memoryview, at: int) -> None:
    """``len(view)`` bytes of ``path`` from ``at``; zeros past its end (or if it vanished)."""
    filled = 0
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        fd = -1
    try:
        while fd >= 0 and filled < len(view):
            n = os.preadv(fd, [view[filled:]], at + filled)
            if n <= 0:
                break
            filled += n
    finally:
        if fd >= 0:
            os.close(fd)
    view[filled:] = bytes(len(view) - filled)


class ChunkBuilder:
    """Builds, hashes, seals and stores chunk ``i`` of a planned archive (thread-safe)."""

    def __init__(
        self, repo: Repository, backup_id: str, data_key: DataKey, level: int, layout: Layout
    ) -> None:
        self.repo, self.backup_id, self.data_key, self.level = repo, backup_id, data_key, level
        self.layout = layout
        self.size = repo.config.chunk_size
        self.digests = PieceDigests()
        # The last, partial chunk of the data files, read before the archive grows past it.
        self.prefix: tuple[int, int, bytes] | None = None  # (chunk, members placed, bytes)

    def read_partial(self) -> None:
        """Read the data files' bytes in the last, partial chunk now, before ``pg_backup_stop``:
        the rest of that chunk (the label, WAL and ``backup_manifest``) is known only after it."""
        index, rest = divmod(self.layout.size, self.size)
        if rest:
            start = index * self.size
            buffer = bytearray(rest)
            with memoryview(buffer) as view:
                for _, member in self._members(start, self.layout.size):
                    self._place(member, view, start)
            self.prefix = (index, len(self.layout.members), bytes(buffer))

    def __call__(self, index: int) -> ChunkEntry:
        start = index * self.size
        buffer = bytearray(min(self.size, self.layout.size - start))
        placed = 0
        if self.prefix is not None and self.prefix[0] == index:
            _, placed, head = self.prefix
            buffer[: len(head)] = head
        with memoryview(buffer) as view:
            for position, member in self._members(start, start + len(buffer)):
                if position >= placed:
                    self._place(member, view, start)
        key = chunk_key(self.backup_id, index)
        sealed = seal(self.data_key, key, buffer, level=self.level)
        self.repo.store.put(key, sealed)
        return ChunkEntry(len(buffer), len(sealed), object_digest(PIECES, sealed))

    def _members(self, low: int, high: int) -> Iterator[tuple[int, Member]]:
        members = self.layout.members
        lo, hi = 0, len(members)
        while lo < hi:  # the first member whose data ends after ``low``
            mid = (lo + hi) // 2
            entry = members[mid].entry
            if entry.offset + entry.size + (-entry.size) % BLOCK <= low:
                lo = mid + 1
            else:
                hi = mid
        for position in range(lo, len(members)):
            member = members[position]
            if member.entry.offset - len(member.header) >= high:
                return
            yield position, member

    def _place(self, member: Member, view: memoryview, start: int) -> None:
        entry = member.entry
        head = entry.offset - len(member.header)
        self._copy(member.header, head, view, start)
        low = max(entry.offset, start)
        high = min(entry.offset + entry.size, start + len(view))
        if low >= high:
            return
        piece = view[low - start : high - start]
        if isinstance(member.source, Path):
            _read_into(member.source, piece, low - entry.offset)
        elif isinstance(member.source, bytes):
            piece[:] = member.source[low - entry.offset : high - entry.offset]
        if entry.kind == "file":
            self.digests.add(entry.path, low - entry.offset, piece_digest(piece))

    @staticmethod
    def _copy(data: bytes, at: int, view: memoryview, start: int) -> None:
        low, high = max(at, start), min(at + len(data), start + len(view))
        if low < high:
            view[low - start : high - start] = data[low - at : high - at]


# ----- the backup itself --------------------------------------------------------------------
@dataclass
class Collected:
    """What the files method hands back to ``take``: like the stream's hasher."""

    files: list[FileEntry]
    captured: dict[str, bytes]


Progress = Callable[[int], None]


def files_backup(
    repo: Repository,
    conninfo: str,
    data_dir: Path,
    backup_id: str,
    data_key: DataKey,
    *,
    label: str,
    system_identifier: str,
    major: int,
    workers: int | None,
    level: int,
    progress: Progress | None,
    refresh: Callable[[], None],
) -> tuple[Collected, list[ChunkEntry], int]:
    """Back up ``data_dir`` of the server at ``conninfo`` into ``repo`` in parallel."""
    workers = workers or len(os.sched_getaffinity(0))
    with _held_backup(conninfo, backup_id, label) as session:
        layout = plan_data(data_dir)
        builder = ChunkBuilder(repo, backup_id, data_key, level, layout)
        settled = layout.size // builder.size
        chunks = _build(builder, range(settled), workers, progress, refresh)
        builder.read_partial()
        stop_lsn, label_text, spcmap = session.stop()
    wal_dir = (data_dir / "pg_wal").resolve()
    timeline = int(_label_field(label_text, "START TIMELINE"))
    start_lsn = _label_field(label_text, "START WAL LOCATION").split(" ")[0]
    extras = {"backup_label": label_text.encode()}
    if spcmap:
        extras["tablespace_map"] = spcmap.encode()
    now = time.time()
    for name, body in extras.items():
        layout.add(name, "file", 0o600, now, len(body), source=body)
    for segment in session.segments:
        path = wal_dir / segment
        layout.add(f"pg_wal/{segment}", "file", 0o600, now, path.stat().st_size, source=path)
    done = {m.entry.path: m for m in layout.members if m.entry.kind == "file"}
    pg_manifest = postgres_manifest(
        [m for m in done.values() if not m.entry.path.startswith("pg_wal/")],
        (timeline, start_lsn, stop_lsn),
        system_identifier if major >= 17 else None,
    )
    layout.add("backup_manifest", "file", 0o600, now, len(pg_manifest), source=pg_manifest)
    layout.close()
    total = -(-layout.size // builder.size)
    chunks += _build(builder, range(settled, total), workers, progress, refresh)
    entries = [m.entry for m in layout.members if m.entry.kind != "end"]
    for entry in entries:
        if entry.kind == "file":
            entry.digest = builder.digests.of(entry.path)
    captured = {"backup_label": extras["backup_label"], "backup_manifest": pg_manifest}
    return Collected(entries, captured), chunks, layout.size


def _build(
    builder: ChunkBuilder,
    indexes: range,
    workers: int,
    progress: Progress | None,
    refresh: Callable[[], None],
) -> list[ChunkEntry]:
    chunks: list[ChunkEntry] = []
    last_refresh = time.monotonic()
    for entry in parallel_map(builder, indexes, workers):
        chunks.append(entry)
        if progress:
            progress(entry.size)
        if time.monotonic() - last_refresh > LOCK_REFRESH_S:
            refresh()
            last_refresh = time.monotonic()
    return chunks


def _label_field(label: str, name: str) -> str:
    for line in label.splitlines():
        if line.startswith(name + ": "):
            return line[len(name) + 2 :].strip()
    raise RuntimeFailure(f"The server's backup label has no {name}.")


class _Session:
    """A non-exclusive backup running on a held connection."""

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        self.conn = conn
        self.segments: list[str] = []

    def stop(self) -> tuple[str, str, str]:
        row = self.conn.execute(
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(wait_for_archive => false)"
        ).fetchone()
        assert row is not None
        stop_lsn, label_text, spcmap = str(row[0]), str(row[1]), str(row[2] or "")
        start_lsn = _label_field(label_text, "START WAL LOCATION").split(" ")[0]
        timeline = int(_label_field(label_text, "START TIMELINE"))
        self.segments = _segments(self.conn, timeline, start_lsn, stop_lsn)
        return stop_lsn, label_text, spcmap


def _segments(
    conn: psycopg.Connection[tuple[object, ...]], timeline: int, start: str, stop: str
) -> list[str]:
    """The WAL segment names from ``start`` to ``stop`` on ``timeline`` (and history files)."""
    row = conn.execute(
        "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'"
    ).fetchone()
    assert row is not None
    seg = int(str(row[0]))
    first = _lsn(start) // seg
    last = (_lsn(stop) - 1) // seg
    per_xlog = 0x100000000 // seg
    names = [f"{timeline:08X}{n // per_xlog:08X}{n % per_xlog:08X}" for n in range(first, last + 1)]
    return names + [f"{t:08X}.history" for t in range(2, timeline + 1)]


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


@contextlib.contextmanager
def _held_backup(conninfo: str, backup_id: str, label: str) -> Iterator[_Session]:
    """``pg_backup_start`` with a temporary slot holding the WAL; the backup ends with us."""
    conn = connect(conninfo, autocommit=True)
    try:
        slot = "pgdr_backup_" + "".join(c for c in backup_id.lower() if c.isalnum())
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true, true)", [slot])
        conn.execute("SELECT pg_backup_start(%s, true)", [label])
        yield _Session(conn)
    except psycopg.Error as exc:
        raise RuntimeFailure(f"The server refused the backup: {exc}".strip()) from exc
    finally:
        conn.close()


def postgres_manifest(
    members: list[Member],
    wal: tuple[int, str, str],
    system_identifier: str | None,
) -> bytes:
    """A ``backup_manifest`` in PostgreSQL's format, as ``pg_basebackup --manifest-checksums=NONE``
    writes it: paths, sizes and the WAL range. Contents are checked by pgdr's own digests (a
    SHA-256 of every file here would cost more than the rest of the backup)."""
    version = 2 if system_identifier else 1
    lines = [f'{{ "PostgreSQL-Backup-Manifest-Version": {version},']
    if system_identifier:
        lines.append(f'"System-Identifier": {system_identifier},')
    lines.append('"Files": [')
    files = [
        json.dumps(
            {
                "Path": m.entry.path,
                "Size": m.entry.size,
                "Last-Modified": datetime.fromtimestamp(m.mtime, UTC).strftime(
                    "%Y-%m-%d %H:%M:%S GMT"
                ),
            }
        )
        for m in members
    ]
    lines.append(",\n".join(files))
    lines.append("],")
    timeline, start, stop = wal
    lines.append('"WAL-Ranges": [')
    lines.append(f'{{ "Timeline": {timeline}, "Start-LSN": "{start}", "End-LSN": "{stop}" }}')
    lines.append("],")
    body = ("\n".join(lines) + "\n").encode()
    checksum = hashlib.sha256(body).hexdigest()
    return body + f'"Manifest-Checksum": "{checksum}"}}\n'.encode()
