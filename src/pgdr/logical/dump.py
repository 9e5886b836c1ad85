"""``pgdr dump``: ``pg_dump`` streamed into the repository as a second kind of backup.

Format decision: by default ``pg_dump -Fc -Z0`` written to stdout and cut straight into sealed
chunks (zstd + AES-256-GCM, the base backups' pipeline), so nothing touches local disk and zstd
does the compression once. ``--jobs N`` (N > 1) asks for the directory format with parallel
jobs: ``pg_dump -Fd -Z0 -j N`` into a private (0700) temporary directory, then that directory as
one tar stream into the same chunks (file ``<db>.dir.tar`` in the manifest); the staging copy is
removed afterwards, also on failure. There is no automatic switch: on the two cores pgdr is
measured on, parallel jobs do not pay for their staging copy (bench/logical.py), so only a user
who knows the host has the cores asks for them. The dump is a
``dumps/<id>/`` object set with an authenticated manifest written last: until then it does not
exist. The manifest names the database, the system identifier, the PostgreSQL version and the
WAL position at the start, and holds the SHA-256 of the whole archive.

``--schema-only --out FILE`` is the other face: plain SQL for version control, written to a
file (refused if it exists, without ``--force``) and never stored.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from pgdr.backup.chunks import private_dir
from pgdr.backup.digest import LEGACY
from pgdr.backup.manifest import (
    DUMPS,
    ChunkEntry,
    FileEntry,
    Manifest,
    chunk_key,
    now_utc,
)
from pgdr.backup.repository import Repository
from pgdr.backup.take import (
    ServerFacts,
    abandoned_on_failure,
    build_manifest,
    new_backup_id,
    server_facts,
    stream_into_chunks,
    write_manifest,
)
from pgdr.core import runner
from pgdr.core.connect import client_environment, connect
from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.crypto import DataKey
from pgdr.crypto.envelope import DEFAULT_LEVEL
from pgdr.logical.tools import DIRECTORY_SUFFIX, binaries_for

Progress = Callable[[int], None]


@dataclass(frozen=True)
class DumpSource:
    """The database being dumped: server facts plus its name and WAL position."""

    facts: ServerFacts
    database: str
    lsn: str
    timeline: int


def dump_source(conninfo: str) -> DumpSource:
    facts = server_facts(conninfo)
    try:
        with connect(conninfo, autocommit=True, raw_errors=True) as conn:
            row = conn.execute(
                "SELECT current_database(), CASE WHEN pg_is_in_recovery() "
                "THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, "
                "(SELECT timeline_id FROM pg_control_checkpoint())"
            ).fetchone()
    except psycopg.Error as exc:
        raise RuntimeFailure(f"Cannot connect to the database to dump it: {exc}".strip()) from exc
    assert row is not None
    return DumpSource(facts, str(row[0]), str(row[1]), int(row[2]))


def _pg_dump_args(
    conninfo: str, source: DumpSource, schema_only: bool
) -> tuple[list[str], dict[str, str]]:
    installation = binaries_for(source.facts.major, "The server")
    client_conninfo, env = client_environment(conninfo)
    args = [str(installation.tool("pg_dump")), "-d", client_conninfo, "--no-password"]
    return args + (["--schema-only"] if schema_only else []), env


@dataclass(frozen=True)
class Sink:
    """Where a logical backup's bytes go: chunk keys, data key, lock refresh (for producers)."""

    repo: Repository
    object_id: str
    data_key: DataKey
    refresh: Callable[[], None]

    def key_of(self, index: int) -> str:
        return chunk_key(self.object_id, index, DUMPS)


Producer = Callable[[Sink], tuple[list[ChunkEntry], int, list[FileEntry]]]


def store_logical(
    repo: Repository,
    source: DumpSource,
    kind: str,
    produce: Producer,
    *,
    label: str | None,
    keep: bool,
    level: int,
) -> Manifest:
    """Store what ``produce`` writes as a ``dumps/<id>/`` object set; the manifest is written
    last, authenticated; on any failure the partial object set is removed."""
    repo.store.check_writable()
    with repo.locked(kind) as lock:
        repo.check_system_identifier(source.facts.system_identifier)
        repo.clean_incomplete(area=DUMPS)
        object_id = new_backup_id(repo, kind, DUMPS)
        data_key = DataKey.generate()
        start = now_utc()
        with abandoned_on_failure(repo, DUMPS, object_id, noun=kind, earlier="earlier ones"):
            stored = produce(Sink(repo, object_id, data_key, lambda: repo.refresh_lock(lock)))
            manifest = build_manifest(
                repo,
                source.facts,
                object_id=object_id,
                kind=kind,
                parent=None,
                label=label,
                keep=keep,
                timeline=source.timeline,
                lsns=(source.lsn, source.lsn),
                start_time=start,
                stored=stored,
                level=level,
                database=source.database,
            )
            write_manifest(repo, manifest, repo.master_key, data_key, DUMPS)
    return manifest


def take_dump(
    repo: Repository,
    conninfo: str,
    *,
    schema_only: bool = False,
    label: str | None = None,
    keep: bool = False,
    progress: Progress | None = None,
    level: int = DEFAULT_LEVEL,
    jobs: int = 1,
) -> Manifest:
    """Dump the database at ``conninfo`` into ``repo``; returns the dump's manifest.

    ``jobs`` > 1: ``pg_dump -Fd -j jobs`` into a private temporary directory, stored as one tar
    stream; otherwise ``pg_dump -Fc`` streamed with nothing on local disk."""
    if jobs < 1:
        raise ConfigError("--jobs must be at least 1.")
    source = dump_source(conninfo)
    args, env = _pg_dump_args(conninfo, source, schema_only)

    def store(
        command: list[str], name: str, sink: Sink
    ) -> tuple[list[ChunkEntry], int, list[FileEntry]]:
        digest = hashlib.sha256()
        with tempfile.TemporaryDirectory(prefix="pgdr-dump-") as tmp:
            chunks, size = stream_into_chunks(
                repo,
                sink.key_of,
                sink.data_key,
                command,
                Path(tmp) / "stderr",
                env=env,
                chunk_size=repo.config.chunk_size,
                scheme=LEGACY,
                feed=digest.update,
                progress=progress,
                workers=None,
                level=level,
                refresh=sink.refresh,
            )
        return chunks, size, [FileEntry(name, "file", size, 0o600, digest.hexdigest(), 0)]

    def produce(sink: Sink) -> tuple[list[ChunkEntry], int, list[FileEntry]]:
        if jobs == 1:
            return store([*args, "-Fc", "-Z0"], f"{source.database}.dump", sink)
        with private_dir("pgdr-dumpdir-") as tmp:
            runner.run([*args, "-Fd", "-Z0", "-j", str(jobs), "-f", str(tmp / "dump")], env=env)
            tar = ["tar", "-C", str(tmp), "-cf", "-", "dump"]
            return store(tar, f"{source.database}{DIRECTORY_SUFFIX}", sink)

    kind = "schema-dump" if schema_only else "dump"
    return store_logical(repo, source, kind, produce, label=label, keep=keep, level=level)


def schema_sql(conninfo: str, out: Path, *, force: bool = False) -> dict[str, object]:
    """Plain-SQL schema of the database into ``out`` (for version control); never stored."""
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it.")
    if not out.parent.is_dir():
        raise ConfigError(f"The directory {out.parent} does not exist.")
    source = dump_source(conninfo)
    args, env = _pg_dump_args(conninfo, source, schema_only=True)
    text = runner.run([*args, "--no-owner", "--no-privileges"], env=env).stdout
    tmp = out.with_name(f".{out.name}.pgdr-tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return {
        "file": str(out),
        "database": source.database,
        "pg_version": source.facts.version,
        "bytes": len(text.encode()),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
