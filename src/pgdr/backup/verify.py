"""Verifying stored backups: every chunk read back, every file's checksum, optional restore test.

``verify_backup`` authenticates the manifest, fetches every chunk (in parallel), checks its
SHA-256 and AES-GCM authentication, then recomputes each file's SHA-256 from the chunks using the
offsets in the manifest, so a damaged chunk is reported as the files it holds, by name. An
incremental backup passes only if the whole chain a restore would combine passes: each parent,
down to the full backup, is verified the same way (a missing parent fails it). A backup whose
manifest cannot be trusted (``Repository.scan_backups``) is a failed report, never skipped.
The restore test (a restore into a throwaway cluster) lives in ``pgdr.restore.tested``, above
this package.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from pgdr.backup.chunks import DamagedBackup, fetch_chunk
from pgdr.backup.manifest import BACKUPS, FileEntry, ForgedManifest, Manifest
from pgdr.backup.repository import DamagedManifest, Repository
from pgdr.core.errors import ConfigError, PgdrError
from pgdr.crypto import CorruptObject, DataKey, open_sealed, parallel_map
from pgdr.storage import ObjectNotFound

Progress = Callable[[int], None]


@dataclass
class VerifyReport:
    backup_id: str
    ok: bool = True
    manifest_ok: bool = True
    chunks: int = 0
    bytes_checked: int = 0
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)
    damaged_chunks: list[dict[str, Any]] = field(default_factory=list)
    damaged_files: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    restore_test: dict[str, Any] | None = None
    chain: list[str] = field(default_factory=list)  # parents verified with it, nearest first

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_s"] = round(self.duration_s, 3)
        return data


@dataclass
class _FileState:
    entry: FileEntry
    hash: Any
    damaged: bool = False


def _check_files(
    manifest: Manifest,
    chunks: Iterable[bytes | None],
    report: VerifyReport,
    progress: Progress | None = None,
) -> None:
    """Recompute every file's digest from the chunks (``None`` = damaged chunk)."""
    files = sorted(
        (f for f in manifest.files if f.kind == "file"), key=lambda f: (f.offset, f.path)
    )
    pointer = 0
    active: list[_FileState] = []
    for index, plain in enumerate(chunks):
        start = index * manifest.chunk_size
        end = start + manifest.chunks[index].size
        if plain is not None:
            report.bytes_checked += len(plain)
        if progress:
            progress(manifest.chunks[index].size)
        while pointer < len(files) and files[pointer].offset < end:
            active.append(_FileState(files[pointer], manifest.file_digest(files[pointer])))
            pointer += 1
        still: list[_FileState] = []
        for state in active:
            f_start, f_end = state.entry.offset, state.entry.offset + state.entry.size
            if plain is None:
                state.damaged = True
            else:
                state.hash.update(plain[max(f_start, start) - start : min(f_end, end) - start])
            if f_end <= end:
                _finish_file(state, report)
            else:
                still.append(state)
        active = still
    for state in active:  # files reaching beyond the last chunk: the stream was cut short
        state.damaged = True
        _finish_file(state, report)
    for missing in files[pointer:]:
        report.damaged_files.append(missing.path)


def _finish_file(state: _FileState, report: VerifyReport) -> None:
    report.files_checked += 1
    if state.damaged or state.hash.hexdigest() != state.entry.digest:
        report.damaged_files.append(state.entry.path)


def verify_backup(
    repo: Repository,
    backup_id: str,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """Read back every chunk of one backup and check every file; never raises for damage."""
    began = time.monotonic()
    report = VerifyReport(backup_id)
    try:
        manifest = repo.read_manifest(backup_id, authenticate=False)
        data_key = manifest.authenticate(repo.master_key, f"of backup {backup_id}")
    except ForgedManifest as exc:
        report.manifest_ok = False
        report.fail(exc.message)
        report.duration_s = time.monotonic() - began
        return report
    _check_pg_manifest(repo, manifest, data_key, report)
    if manifest.parent is not None:
        _verify_parent(repo, manifest.parent, report, workers)

    def check(index: int) -> bytes | None:
        try:
            return fetch_chunk(repo, manifest, data_key, index)
        except DamagedBackup as exc:
            report.damaged_chunks.append({"chunk": index + 1, "reason": exc.reason})
            return None

    # Chunks are hashed into per-file states as they arrive; only a few are held at a time.
    results = parallel_map(check, range(len(manifest.chunks)), workers)
    _check_files(manifest, results, report, progress)
    report.chunks = len(manifest.chunks)
    report.damaged_chunks.sort(key=lambda d: int(d["chunk"]))
    for damaged in report.damaged_chunks:
        report.fail(f"chunk {damaged['chunk']} is damaged ({damaged['reason']})")
    if report.damaged_files:
        report.ok = False
    report.duration_s = time.monotonic() - began
    return report


def _verify_parent(
    repo: Repository, parent: str, report: VerifyReport, workers: int | None
) -> None:
    """Verify the chain under an incremental: the parent, and (recursively) its parents."""
    if parent in report.chain or parent == report.backup_id:
        report.fail(f"its chain of parents loops back to {parent}")
        return
    try:
        repo.read_manifest(parent)
    except PgdrError as exc:
        report.fail(
            f"its parent backup {parent} cannot be used, so it cannot be restored: {exc.message}"
        )
        return
    sub = verify_backup(repo, parent, workers=workers)
    report.chain.extend([parent, *sub.chain])
    if not sub.ok:
        details = sub.problems + [f"damaged file {path}" for path in sub.damaged_files]
        report.fail(f"its parent backup {parent} fails verification: {'; '.join(details)}")


def backups_to_verify(
    repo: Repository, backup_id: str | None, all_backups: bool
) -> tuple[list[str], list[VerifyReport]]:
    """The ids to verify, and the failed reports of asked-for backups whose manifest is damaged.

    A damaged manifest is a verification that failed (exit 1), whether it was asked for by id
    or found by ``--all``; one sealed under another master key stays a key error (exit 2).
    """
    good, damaged = repo.scan_backups()
    if all_backups:
        if not good and not damaged:
            raise ConfigError(f"The repository {repo.name} ({repo.url}) holds no backups yet.")
        return [m.id for m in good], [damaged_report(d) for d in damaged]
    asked = [d for d in damaged if d.backup_id == backup_id and not d.wrong_key]
    if asked:
        return [], [damaged_report(asked[0])]
    return [repo.resolve_id(backup_id or "latest")], []


def damaged_report(damaged: DamagedManifest) -> VerifyReport:
    """The report of a backup whose manifest cannot be trusted."""
    report = VerifyReport(damaged.backup_id, manifest_ok=False)
    report.fail(damaged.problem)
    return report


def _check_pg_manifest(
    repo: Repository, manifest: Manifest, data_key: DataKey, report: VerifyReport
) -> None:
    key = f"{BACKUPS}{manifest.id}/backup_manifest"
    try:
        open_sealed(data_key, key, repo.store.get(key))
    except ObjectNotFound:
        report.fail("PostgreSQL's backup_manifest is missing")
    except CorruptObject:
        report.fail("PostgreSQL's backup_manifest is damaged")
