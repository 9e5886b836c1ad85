"""Taking a base backup: ``pg_basebackup`` streamed straight into the repository.

``pg_basebackup -D - -Ft -X fetch`` (the binaries matching the server's major version) writes
one tar archive to stdout: the data directory, the WAL needed to make it consistent, and
PostgreSQL's own ``backup_manifest``. pgdr reads it in fixed-size chunks, hashes every file on
the way (a streaming tar reader), seals each chunk (zstd + AES-256-GCM, both cores) and stores it;
nothing is written to local disk. The manifest is written last; until then the backup does not
exist. On PostgreSQL 17+ ``incremental=True`` passes the previous backup's ``backup_manifest``
(fetched from the repository) to ``pg_basebackup --incremental``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, ParamSpec

import psycopg

from pgdr import __version__
from pgdr.backup.digest import LEGACY, PIECES, FileDigest, object_digest
from pgdr.backup.files import Collected, choose_method, files_backup, locate
from pgdr.backup.hashing import HashThread
from pgdr.backup.manifest import (
    BACKUPS,
    ChunkEntry,
    FileEntry,
    Manifest,
    chunk_key,
    format_time,
    now_utc,
)
from pgdr.backup.repository import LOCK_REFRESH_S, Repository
from pgdr.backup.seen import remember_backup
from pgdr.backup.tarstream import TarMember, TarReader
from pgdr.cluster import PgInstallation, installation_for_major
from pgdr.core import runner
from pgdr.core.connect import client_environment, connect, redact
from pgdr.core.errors import ConfigError, PgdrError, RuntimeFailure
from pgdr.core.log import logger
from pgdr.crypto import DataKey, MasterKey, open_sealed, parallel_map, seal
from pgdr.crypto.envelope import DEFAULT_LEVEL

log = logger(__name__)
Progress = Callable[[int], None]
P = ParamSpec("P")
CAPTURED = ("backup_label", "backup_manifest")


@dataclass(frozen=True)
class ServerFacts:
    """What pgdr learns about the server before a backup."""

    version: str
    major: int
    system_identifier: str
    size_bytes: int
    summarize_wal: bool


def server_facts(conninfo: str) -> ServerFacts:
    try:
        with connect(conninfo, autocommit=True, raw_errors=True) as conn:
            version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            num = int(conn.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
            sysid = str(
                conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]  # type: ignore[index]
            )
            size = int(
                conn.execute("SELECT sum(pg_database_size(oid)) FROM pg_database").fetchone()[0]  # type: ignore[index]
            )
            summarize = False
            if num >= 170000:
                summarize = (
                    str(conn.execute("SHOW summarize_wal").fetchone()[0]) == "on"  # type: ignore[index]
                )
    except psycopg.Error as exc:
        raise RuntimeFailure(
            f"Cannot connect to the database to back it up: {exc}".strip()
        ) from exc
    return ServerFacts(version.split(maxsplit=1)[0], num // 10000, sysid, size, summarize)


class _Hasher(TarReader):
    """Records every member with its digest and captures the small files pgdr needs."""

    def __init__(self, chunk_size: int) -> None:
        super().__init__()
        self.chunk_size = chunk_size
        self.files: list[FileEntry] = []
        self.captured: dict[str, bytearray] = {}
        self._digests: dict[str, str] = {}
        self._hasher = HashThread(self._digests.__setitem__)

    def on_member(self, member: TarMember) -> None:
        if member.kind == "file":
            digest = FileDigest(PIECES, member.data_offset, self.chunk_size)
            self._hasher.start(member.path, digest)
        if member.path in CAPTURED:
            self.captured[member.path] = bytearray()

    def on_data(self, member: TarMember, data: memoryview) -> None:
        if member.kind == "file":
            self._hasher.update(data)
        if member.path in self.captured:
            self.captured[member.path] += data

    def on_member_end(self, member: TarMember) -> None:
        if member.kind == "file":
            self._hasher.end()
        self.files.append(
            FileEntry(
                path=member.path,
                kind=member.kind,
                size=member.size,
                mode=member.mode,
                digest=None,
                offset=member.data_offset,
                linkname=member.linkname,
            )
        )

    def finish(self) -> None:
        """Wait for the hashes and put them into the file list."""
        self._hasher.close()
        for entry in self.files:
            if entry.kind == "file":
                entry.digest = self._digests[entry.path]

    def abandon(self) -> None:
        self._hasher.abandon()


def _read_chunks(stream: IO[bytes], size: int) -> Iterator[bytearray]:
    """Fixed-size pieces of the stream (the last one shorter); each a new, never-reused buffer."""
    while True:
        buffer = bytearray(size)
        with memoryview(buffer) as view:
            filled = 0
            while filled < size:
                n = stream.readinto(view[filled:])  # type: ignore[attr-defined]
                if not n:
                    break
                filled += n
        if filled == 0:
            return
        if filled < size:
            del buffer[filled:]
            yield buffer
            return
        yield buffer


def _widen_pipe(stream: IO[bytes]) -> None:
    """A 1 MiB pipe instead of 64 kB: far fewer wake-ups between pg_basebackup and pgdr."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)


ID_SUFFIXES = {
    "full": "full",
    "incremental": "incr",
    "dump": "dump",
    "schema-dump": "schema",
    "export": "csv",
}


def new_backup_id(repo: Repository, kind: str, area: str = BACKUPS) -> str:
    suffix = ID_SUFFIXES[kind]
    existing = set(repo.backup_dirs(area))
    while True:
        stamp = now_utc().strftime("%Y%m%dT%H%M%SZ")
        candidate = f"{stamp}-{suffix}"
        if candidate not in existing and not any(e.startswith(stamp) for e in existing):
            return candidate
        time.sleep(0.2)


def _label_field(label: str, name: str) -> str | None:
    match = re.search(rf"^{name}: (.*)$", label, re.MULTILINE)
    return match.group(1).strip() if match else None


def fetch_pg_manifest(repo: Repository, manifest: Manifest) -> bytes:
    """PostgreSQL's ``backup_manifest`` of a stored backup (needed for an incremental)."""
    data_key = manifest.authenticate(repo.master_key, f"of backup {manifest.id}")
    key = f"{BACKUPS}{manifest.id}/backup_manifest"
    return open_sealed(data_key, key, repo.store.get(key))


def records_failure(take: Callable[P, Manifest]) -> Callable[P, Manifest]:
    """A backup that fails for any anticipated reason (server down, tool failed, repository busy)
    is recorded in the repository, so the monitor's ``backup_failed`` check sees it."""

    @functools.wraps(take)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Manifest:
        try:
            return take(*args, **kwargs)
        except PgdrError as exc:
            repo = kwargs.get("repo", args[0] if args else None)
            if isinstance(repo, Repository):
                repo.record_backup_failure(time.strftime("%Y%m%dT%H%M%SZ"), exc.message)
            raise

    return wrapper


@records_failure
def take_backup(
    repo: Repository,
    conninfo: str,
    *,
    label: str | None = None,
    keep: bool = False,
    incremental: bool = False,
    progress: Progress | None = None,
    on_start: Callable[[str, int], None] | None = None,
    workers: int | None = None,
    level: int = DEFAULT_LEVEL,
    pg_bin: Path | None = None,
    facts: ServerFacts | None = None,
    new_key: bool = False,
    method: str = "auto",
    on_method: Callable[[str, str], None] | None = None,
) -> Manifest:
    """Take a base backup of the server at ``conninfo`` into ``repo``; returns its manifest.

    ``on_start(backup_id, estimated_bytes)`` is called once the backup has an id (for progress
    bars); ``progress(n)`` after each ``n`` bytes of the archive are stored. ``new_key`` allows
    sealing with a key other than the one of the repository's existing backups. ``method`` is
    ``files`` (parallel workers reading the data directory, see :mod:`pgdr.backup.files`),
    ``stream`` (``pg_basebackup``) or ``auto`` (files when the data directory is readable
    here); ``on_method(method, note)`` learns the choice and why ``auto`` fell back."""
    facts = facts or server_facts(conninfo)
    locality = locate(conninfo, facts.system_identifier, facts.major)
    chosen, note = choose_method(method, locality, incremental)
    if on_method:
        on_method(chosen, note)
    installation = installation_for_major(facts.major, pg_bin or repo.settings.pg_bin)
    repo.store.check_writable()
    master = repo.writing_key(new_key)
    with repo.locked("backup") as lock:
        repo.check_system_identifier(facts.system_identifier)
        repo.clean_incomplete()
        parent = _incremental_parent(repo, facts) if incremental else None
        backup_id = new_backup_id(repo, "incremental" if parent else "full")
        if on_start:
            on_start(backup_id, facts.size_bytes)
        run = _BackupRun(
            repo=repo,
            conninfo=conninfo,
            backup_id=backup_id,
            data_key=DataKey.generate(),
            start_time=now_utc(),
            facts=facts,
            parent=parent,
            label=label,
            progress=progress,
            workers=workers,
            level=level,
            refresh=lambda: repo.refresh_lock(lock),
        )
        data_dir = locality.data_dir if chosen == "files" else None
        assert chosen != "files" or data_dir is not None
        manifest = _store_backup(run, installation, data_dir, master, keep)
    log.info("Backup %s of %s written to %s.", manifest.id, redact(conninfo), repo.url)
    return manifest


def _store_backup(
    run: _BackupRun,
    installation: PgInstallation,
    data_dir: Path | None,
    master: MasterKey,
    keep: bool,
) -> Manifest:
    """Store the backup (read from ``data_dir`` when given, else streamed by ``pg_basebackup``)
    and write its manifest last; on failure what was stored is removed."""
    with tempfile.TemporaryDirectory(prefix="pgdr-backup-") as tmp:
        args, env = _basebackup_args(installation, run, Path(tmp))
        with abandoned_on_failure(
            run.repo, BACKUPS, run.backup_id, noun="backup", earlier="earlier backups"
        ):
            stored: tuple[_Hasher | Collected, list[ChunkEntry], int]
            if data_dir is not None:
                stored = _files(run, data_dir, backup_label=args[-1])
            else:
                stored = _stream(run, args, Path(tmp) / "stderr", env)
            manifest = _finish(run, *stored, keep=keep)
            write_manifest(run.repo, manifest, master, run.data_key)
            remember_backup(run.repo, run.backup_id, manifest.stop_lsn, manifest.stop_time)
    return manifest


@dataclass(frozen=True)
class _BackupRun:
    """What every step of one base backup needs to know."""

    repo: Repository
    conninfo: str
    backup_id: str
    data_key: DataKey
    start_time: datetime
    facts: ServerFacts
    parent: Manifest | None
    label: str | None
    progress: Progress | None
    workers: int | None
    level: int
    refresh: Callable[[], None]


def _basebackup_args(
    installation: PgInstallation, run: _BackupRun, tmp: Path
) -> tuple[list[str], dict[str, str]]:
    """``pg_basebackup``'s arguments (the last one is the backup label) and environment. An
    incremental's parent ``backup_manifest`` is fetched into ``tmp``. The password goes through
    the environment: argv is readable by every local user."""
    client_conninfo, env = client_environment(run.conninfo)
    args: list[str] = [
        str(installation.tool("pg_basebackup")),
        "-d",
        client_conninfo,
        "-D",
        "-",
        "-Ft",
        "-X",
        "fetch",
        "-c",
        "fast",
        "-l",
        f"pgdr {run.backup_id}" + (f": {run.label}" if run.label else ""),
    ]
    if run.parent is not None:
        parent_manifest = tmp / "parent_backup_manifest"
        parent_manifest.write_bytes(fetch_pg_manifest(run.repo, run.parent))
        args.append(f"--incremental={parent_manifest}")
    return args, env


def _files(
    run: _BackupRun, data_dir: Path, backup_label: str
) -> tuple[Collected, list[ChunkEntry], int]:
    return files_backup(
        run.repo,
        run.conninfo,
        data_dir,
        run.backup_id,
        run.data_key,
        label=backup_label,
        system_identifier=run.facts.system_identifier,
        major=run.facts.major,
        workers=run.workers,
        level=run.level,
        progress=run.progress,
        refresh=run.refresh,
    )


def _incremental_parent(repo: Repository, facts: ServerFacts) -> Manifest:
    if facts.major < 17:
        raise ConfigError(
            f"Incremental backups need PostgreSQL 17 or later; this server is {facts.version}."
        )
    if not facts.summarize_wal:
        raise ConfigError(
            "Incremental backups need summarize_wal = on on the server "
            "(ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf();)."
        )
    backups = repo.list_backups()
    if not backups:
        raise ConfigError(
            f"The repository {repo.name} has no backup to build an incremental on; "
            "take a full backup first."
        )
    parent = backups[-1]
    if parent.pg_major != facts.major:
        raise ConfigError(
            f"The latest backup {parent.id} is from PostgreSQL {parent.pg_major}; take a full "
            "backup first."
        )
    return parent


def _stream(
    run: _BackupRun, args: list[str], stderr_path: Path, env: dict[str, str]
) -> tuple[_Hasher, list[ChunkEntry], int]:
    hasher = _Hasher(run.repo.config.chunk_size)
    try:
        chunks, stream_size = stream_into_chunks(
            run.repo,
            lambda index: chunk_key(run.backup_id, index),
            run.data_key,
            args,
            stderr_path,
            env=env,
            chunk_size=run.repo.config.chunk_size,
            scheme=PIECES,
            feed=hasher.feed,
            progress=run.progress,
            workers=run.workers,
            level=run.level,
            refresh=run.refresh,
        )
    except BaseException:
        hasher.abandon()
        raise
    hasher.close()
    hasher.finish()
    for name in CAPTURED:
        if name not in hasher.captured:
            raise RuntimeFailure(f"pg_basebackup's archive has no {name}")
    return hasher, chunks, stream_size


def stream_into_chunks(
    repo: Repository,
    key_of: Callable[[int], str],
    data_key: DataKey,
    args: list[str],
    stderr_path: Path,
    *,
    env: dict[str, str],
    chunk_size: int,
    scheme: str,
    feed: Callable[[bytearray], None],
    progress: Progress | None,
    workers: int | None,
    level: int,
    refresh: Callable[[], None],
) -> tuple[list[ChunkEntry], int]:
    """Run a PostgreSQL client program (``args``) and store its stdout as sealed chunks.

    Every chunk is passed to ``feed`` (in order) before it is sealed under ``key_of(index)``;
    returns the chunk entries and the stream's size. The program's failure is one sentence
    (the last line of its stderr) and nothing is returned.
    """
    with stderr_path.open("wb") as errfile:
        proc = runner.start(args, env=env, stderr=errfile, unbuffered=True)
        try:
            assert proc.stdout is not None
            _widen_pipe(proc.stdout)
            stored = store_chunks(
                repo,
                key_of,
                data_key,
                _read_chunks(proc.stdout, chunk_size),
                scheme=scheme,
                feed=feed,
                progress=progress,
                workers=workers,
                level=level,
                refresh=refresh,
            )
            code = proc.wait()
        finally:
            runner.stop(proc, grace_s=0)
    if code != 0:
        raise RuntimeFailure(runner.sentence(Path(args[0]).name, stderr_path.read_bytes()))
    return stored


def store_chunks(
    repo: Repository,
    key_of: Callable[[int], str],
    data_key: DataKey,
    pieces: Iterable[bytearray],
    *,
    scheme: str,
    feed: Callable[[bytearray], None],
    progress: Progress | None,
    workers: int | None,
    level: int,
    refresh: Callable[[], None],
) -> tuple[list[ChunkEntry], int]:
    """Seal and store consecutive chunks (each a new buffer) in parallel, in order."""
    store = repo.store
    workers = workers or store.workers(os.cpu_count() or 1)
    stream_size = 0
    last_refresh = time.monotonic()

    def seal_and_store(item: tuple[int, bytearray]) -> ChunkEntry:
        index, plain = item
        key = key_of(index)
        sealed = seal(data_key, key, plain, level=level)
        store.put(key, sealed)
        return ChunkEntry(len(plain), len(sealed), object_digest(scheme, sealed))

    def numbered() -> Iterator[tuple[int, bytearray]]:
        nonlocal stream_size
        for index, chunk in enumerate(pieces):
            feed(chunk)
            stream_size += len(chunk)
            yield index, chunk

    chunks: list[ChunkEntry] = []
    for entry in parallel_map(seal_and_store, numbered(), workers):
        chunks.append(entry)
        if progress:
            progress(entry.size)
        if time.monotonic() - last_refresh > LOCK_REFRESH_S:
            refresh()
            last_refresh = time.monotonic()
    return chunks, stream_size


def _finish(
    run: _BackupRun,
    hasher: _Hasher | Collected,
    chunks: list[ChunkEntry],
    stream_size: int,
    *,
    keep: bool,
) -> Manifest:
    backup_label = bytes(hasher.captured["backup_label"]).decode()
    pg_manifest_raw = bytes(hasher.captured["backup_manifest"])
    try:
        pg_manifest: dict[str, Any] = json.loads(pg_manifest_raw)
        wal_range = pg_manifest["WAL-Ranges"][-1]
    except (ValueError, KeyError, IndexError) as exc:
        raise RuntimeFailure("pg_basebackup's backup_manifest cannot be read") from exc
    start_lsn = (_label_field(backup_label, "START WAL LOCATION") or "").split(" ")[0]
    timeline = int(_label_field(backup_label, "START TIMELINE") or wal_range["Timeline"])
    key = f"{BACKUPS}{run.backup_id}/backup_manifest"
    run.repo.store.put(key, seal(run.data_key, key, pg_manifest_raw))
    return build_manifest(
        run.repo,
        run.facts,
        object_id=run.backup_id,
        kind="incremental" if run.parent else "full",
        parent=run.parent.id if run.parent else None,
        label=run.label,
        keep=keep,
        timeline=timeline,
        lsns=(start_lsn or str(wal_range["Start-LSN"]), str(wal_range["End-LSN"])),
        start_time=run.start_time,
        stored=(chunks, stream_size, hasher.files),
        level=run.level,
        digest_scheme=PIECES,
    )


def build_manifest(
    repo: Repository,
    facts: ServerFacts,
    *,
    object_id: str,
    kind: str,
    parent: str | None,
    label: str | None,
    keep: bool,
    timeline: int,
    lsns: tuple[str, str],
    start_time: datetime,
    stored: tuple[list[ChunkEntry], int, list[FileEntry]],
    level: int,
    database: str = "",
    digest_scheme: str = LEGACY,
) -> Manifest:
    """The manifest of an object set (a base backup or a dump) just stored, stopped now;
    ``lsns`` is (start, stop), ``stored`` is (chunks, stream size, files). Not yet sealed."""
    chunks, stream_size, files = stored
    return Manifest(
        id=object_id,
        kind=kind,
        parent=parent,
        label=label,
        keep=keep,
        pg_version=facts.version,
        pg_major=facts.major,
        system_identifier=facts.system_identifier,
        timeline=timeline,
        start_lsn=lsns[0],
        stop_lsn=lsns[1],
        start_time=format_time(start_time),
        stop_time=format_time(now_utc()),
        chunk_size=repo.config.chunk_size,
        stream_size=stream_size,
        stored_size=sum(c.stored_size for c in chunks),
        compression=f"zstd-{level}",
        encryption="aes-256-gcm",
        host=socket.gethostname(),
        pgdr_version=__version__,
        chunks=chunks,
        files=files,
        database=database,
        digest_scheme=digest_scheme,
    )


def write_manifest(
    repo: Repository, manifest: Manifest, master: MasterKey, data_key: DataKey, area: str = BACKUPS
) -> None:
    """Seal ``manifest`` (wrapped data key, HMAC) and write it: the last write of an object set,
    which makes it exist."""
    manifest.wrapped_key = master.wrap(data_key)
    manifest.sign_with(data_key)
    repo.store.put(repo.manifest_key(manifest.id, area), manifest.to_json())


@contextlib.contextmanager
def abandoned_on_failure(
    repo: Repository, area: str, object_id: str, *, noun: str, earlier: str
) -> Iterator[None]:
    """On any failure inside, remove what the object set ``area``/``object_id`` stored so far
    (best effort: the next run cleans the rest); a pgdr error keeps its exit code and says that
    the ``noun`` was abandoned and ``earlier`` are intact."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(PgdrError, OSError):
            repo.store.delete_prefix(f"{area}{object_id}/")
        if isinstance(exc, PgdrError):
            wrapped = PgdrError(
                f"{exc.message.rstrip('.')}; {noun} {object_id} was abandoned and {earlier} are "
                "intact."
            )
            wrapped.exit_code = exc.exit_code
            raise wrapped from exc
        raise
