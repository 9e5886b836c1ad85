"""``pgdr export``: the profile's critical tables as CSV, all from one snapshot.

The runbook exports critical tables to CSV. pgdr reads every table (the profile's ``export =
true`` tables, or ``--tables``) in one ``REPEATABLE READ READ ONLY`` transaction, so the files
agree with each other (a conversation's messages are there when the conversation is), as ``COPY
... TO STDOUT (FORMAT csv, HEADER)``. Each file's row count (``count(*)`` in the same snapshot)
and SHA-256 go into ``export-manifest.json``.

By default the files go into the repository, encrypted, as one ``export`` object set under
``dumps/`` (the CSV files one after another in sealed chunks; the manifest records where each
starts, its size and hash; ``export-manifest.json`` is the last file), so retention and ``dump
verify`` apply. ``--out DIR`` writes plain files instead, into a directory that must be new or
empty (or ``--force``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgdr.backup.digest import LEGACY
from pgdr.backup.manifest import ChunkEntry, FileEntry, Manifest
from pgdr.backup.repository import Repository
from pgdr.backup.take import store_chunks
from pgdr.core.connect import connect
from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.core.names import join_name, split_table_name
from pgdr.crypto.envelope import DEFAULT_LEVEL
from pgdr.logical.dump import Sink, dump_source, store_logical
from pgdr.profile import Profile

MANIFEST_NAME = "export-manifest.json"


@dataclass
class ExportResult:
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # name: rows, bytes, sha256
    snapshot: str = "one REPEATABLE READ READ ONLY transaction"
    stored_as: str | None = None  # the repository object id, or the directory
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tables": self.tables,
            "snapshot": self.snapshot,
            "stored_as": self.stored_as,
            "notes": self.notes,
        }


def _file_safe(table: tuple[str, str]) -> tuple[str, str]:
    """A table whose name can be its CSV file's name (no "/"), as the export writes it."""
    if "/" in "".join(table):
        raise ConfigError(
            f"Table {join_name(*table)} cannot be exported: a file name cannot hold its '/'."
        )
    return table


def export_tables(profile: Profile, chosen: list[str] | None) -> list[tuple[str, str]]:
    """(schema, name) of the tables to export: ``--tables`` or the profile's ``export`` ones."""
    if chosen:
        return [_file_safe(t) for t in dict.fromkeys(split_table_name(t) for t in chosen)]
    tables = [_file_safe((t.schema_name, t.name)) for t in profile.tables if t.export]
    if not tables:
        raise ConfigError(
            f"The profile {profile.name} marks no table with export = true; name them with "
            "--tables."
        )
    return tables


def _csv_files(
    conn: psycopg.Connection[Any], tables: list[tuple[str, str]], result: ExportResult
) -> Iterator[tuple[str, bytes]]:
    """(file name, piece) of every table's CSV, then the export manifest, in one snapshot.

    Every table is checked to exist before any row is read, and rows are read with
    ``row_security = off`` (as ``pg_dump`` does): a table whose row-level security policy
    would hide rows from this role fails the export instead of passing for complete."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    conn.execute("SET LOCAL row_security = off")
    for schema, name in tables:
        ident = sql.Identifier(schema, name)
        if conn.execute("SELECT to_regclass(%s)", (ident.as_string(conn),)).fetchone() == (None,):
            conn.execute("ROLLBACK")
            raise ConfigError(
                f"Table {join_name(schema, name)} does not exist; nothing was exported."
            )
    for schema, name in tables:
        ident = sql.Identifier(schema, name)
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
        digest, size, file = hashlib.sha256(), 0, f"{join_name(schema, name)}.csv"
        copy = sql.SQL("COPY {} TO STDOUT (FORMAT csv, HEADER)").format(ident)
        with conn.cursor().copy(copy) as out:
            for piece in out:
                data = bytes(piece)
                digest.update(data)
                size += len(data)
                yield file, data
        rows = int(count[0]) if count else 0
        result.tables[join_name(schema, name)] = {
            "file": file,
            "rows": rows,
            "bytes": size,
            "sha256": digest.hexdigest(),
        }
    conn.execute("COMMIT")
    yield MANIFEST_NAME, json.dumps(result.as_dict() | {"stored_as": None}, indent=1).encode()


def _rechunk(
    pieces: Iterator[tuple[str, bytes]], size: int, files: list[FileEntry]
) -> Iterator[bytearray]:
    """Fixed-size chunks (each a new buffer) of the files' concatenation, recording each file's
    offset, size and SHA-256 in ``files``."""
    buffer = bytearray()
    offset = 0
    digests: dict[str, Any] = {}
    for name, data in pieces:
        if not files or files[-1].path != name:
            files.append(FileEntry(name, "file", 0, 0o600, None, offset))
            digests[name] = hashlib.sha256()
        files[-1].size += len(data)
        digests[name].update(data)
        offset += len(data)
        buffer += data
        while len(buffer) >= size:
            yield buffer[:size]
            del buffer[:size]
    if buffer:
        yield buffer
    for entry in files:
        entry.digest = digests[entry.path].hexdigest()


def export_to_repository(
    repo: Repository,
    conninfo: str,
    tables: list[tuple[str, str]],
    *,
    label: str | None = None,
    level: int = DEFAULT_LEVEL,
) -> tuple[ExportResult, Manifest]:
    """Export ``tables`` into the repository, encrypted; returns the result and its manifest."""
    source = dump_source(conninfo)
    result = ExportResult()

    def produce(sink: Sink) -> tuple[list[ChunkEntry], int, list[FileEntry]]:
        files: list[FileEntry] = []
        with connect(conninfo, autocommit=True, raw_errors=True) as conn:
            chunks, size = store_chunks(
                repo,
                sink.key_of,
                sink.data_key,
                _rechunk(_csv_files(conn, tables, result), repo.config.chunk_size, files),
                scheme=LEGACY,
                feed=lambda _chunk: None,
                progress=None,
                workers=None,
                level=level,
                refresh=sink.refresh,
            )
        return chunks, size, files

    manifest = store_logical(repo, source, "export", produce, label=label, keep=False, level=level)
    result.stored_as = manifest.id
    return result, manifest


def export_to_directory(
    conninfo: str, tables: list[tuple[str, str]], out: Path, *, force: bool = False
) -> ExportResult:
    """Export ``tables`` as plain CSV files (and the manifest) into ``out``."""
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"{out} is not empty; choose a new directory or pass --force.")
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    result = ExportResult(stored_as=str(out))
    handles: dict[str, Any] = {}  # each file is written as ".NAME.part", renamed when all are
    done = False
    try:
        with connect(conninfo, autocommit=True, raw_errors=True) as conn:
            for name, data in _csv_files(conn, tables, result):
                if name not in handles:
                    handles[name] = (out / f".{name}.part").open("wb")
                handles[name].write(data)
        done = True
    except psycopg.Error as exc:
        raise RuntimeFailure(f"The export failed: {str(exc).strip().splitlines()[0]}") from exc
    finally:
        for handle in handles.values():
            handle.close()
        for name in handles:
            part = out / f".{name}.part"
            if done:
                part.replace(out / name)
            else:
                part.unlink(missing_ok=True)
    return result
