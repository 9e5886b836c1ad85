"""Restoring a base backup into a new data directory.

Chunks are fetched, checked against the manifest and opened in parallel (in order); the archive
stream is extracted by a streaming tar reader that checks each file's SHA-256 against the
(authenticated) manifest as it is written. Everything lands in a staging directory next to the
target, which is renamed into place only when complete, so a failed restore leaves nothing
half-written behind and an existing directory is never touched without ``force``.

An incremental backup (PostgreSQL 17+) is restored by materialising its chain (full + each
incremental) into temporary directories next to the target, then ``pg_combinebackup`` writes the
synthetic full backup into the staging directory; this needs local disk for the whole chain.

The result is a data directory that reaches consistency by itself (the WAL of the backup is in
``pg_wal``) and starts as a copy of the server at the end of the backup. Recovery settings for
point-in-time recovery are a separate step that writes into the restored directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pgdr.backup.chunks import DamagedBackup, fetch_chunk
from pgdr.backup.hashing import HashThread
from pgdr.backup.manifest import FileEntry, Manifest
from pgdr.backup.repository import Repository
from pgdr.backup.tarstream import TarMember, TarReader
from pgdr.cluster import installation_for_major
from pgdr.cluster.service_user import ServiceUser, resolve_service_user
from pgdr.crypto import DataKey, parallel_map
from pgdr.errors import ConfigError, RuntimeFailure

Progress = Callable[[int], None]


@dataclass
class RestoreResult:
    """What a restore did."""

    backup_id: str
    data_dir: Path
    chain: list[str]
    pg_major: int
    pg_version: str
    bytes_restored: int
    files: int
    duration_s: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "data_dir": str(self.data_dir),
            "chain": self.chain,
            "pg_major": self.pg_major,
            "pg_version": self.pg_version,
            "bytes_restored": self.bytes_restored,
            "files": self.files,
            "duration_s": round(self.duration_s, 3),
            "notes": self.notes,
        }


def backup_chain(repo: Repository, manifest: Manifest) -> list[Manifest]:
    """The backups a restore of ``manifest`` needs, oldest (the full backup) first."""
    chain = [manifest]
    while chain[0].parent is not None:
        parent_id = chain[0].parent
        try:
            chain.insert(0, repo.read_manifest(parent_id))
        except ConfigError:
            raise RuntimeFailure(
                f"Backup {manifest.id} is incremental on {parent_id}, which is missing from "
                f"the repository {repo.name}."
            ) from None
    return chain


class _Extractor(TarReader):
    """Writes the archive into ``root``, checking each file against the manifest."""

    def __init__(self, root: Path, manifest: Manifest, owner: ServiceUser | None) -> None:
        super().__init__()
        self.root = root
        self.manifest = manifest
        self.expected: dict[str, FileEntry] = {f.path: f for f in manifest.files}
        self.seen: set[str] = set()
        self.owner = owner
        self._fd: int | None = None
        self.mismatched: list[str] = []
        self._hasher = HashThread(self._compare)
        self.bytes_written = 0

    def _compare(self, path: str, digest: str) -> None:
        if digest != self.expected[path].sha256:
            self.mismatched.append(path)

    def _path(self, name: str) -> Path:
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts:
            raise DamagedBackup(
                f"Backup {self.manifest.id} contains an unsafe path {name!r}; refusing it."
            )
        return self.root.joinpath(*pure.parts)

    def _chown(self, path: Path | int) -> None:
        if self.owner is not None and self.owner.switch:
            if isinstance(path, int):
                os.fchown(path, self.owner.uid, self.owner.gid)
            else:
                os.lchown(path, self.owner.uid, self.owner.gid)

    def on_member(self, member: TarMember) -> None:
        if member.path not in self.expected:
            raise DamagedBackup(
                f"Backup {self.manifest.id} holds {member.path}, which its manifest does not list."
            )
        self.seen.add(member.path)
        path = self._path(member.path)
        if member.kind == "dir":
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._chown(path)
        elif member.kind == "file":
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._chown(self._fd)
            self._hasher.start(member.path)
        elif member.kind == "symlink":
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.symlink_to(member.linkname)
            self._chown(path)

    def on_data(self, member: TarMember, data: memoryview) -> None:
        if self._fd is not None:
            self._hasher.update(data)
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            self.bytes_written += len(data)

    def on_member_end(self, member: TarMember) -> None:
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        self._hasher.end()
        if member.size != self.expected[member.path].size:
            raise DamagedBackup(
                f"{member.path} in backup {self.manifest.id} does not have its recorded size."
            )

    def finish(self) -> None:
        self.close()
        self._hasher.close()
        if self.mismatched:
            raise DamagedBackup(
                f"{self.mismatched[0]} in backup {self.manifest.id} does not match its checksum"
                + (
                    f" (and {len(self.mismatched) - 1} more files)."
                    if len(self.mismatched) > 1
                    else "."
                )
            )
        missing = [f.path for f in self.manifest.files if f.path not in self.seen]
        if missing:
            raise DamagedBackup(
                f"Backup {self.manifest.id} lacks {len(missing)} file(s) its manifest lists, "
                f"e.g. {missing[0]}."
            )

    def abort(self) -> None:
        self._hasher.abandon()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def extract_backup(
    repo: Repository,
    manifest: Manifest,
    data_key: DataKey,
    target: Path,
    *,
    owner: ServiceUser | None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> _Extractor:
    """Stream one backup's archive into the empty directory ``target``."""
    extractor = _Extractor(target, manifest, owner)
    indexes = range(len(manifest.chunks))
    try:
        for plain in parallel_map(
            lambda i: fetch_chunk(repo, manifest, data_key, i), indexes, workers
        ):
            extractor.feed(plain)
            if progress:
                progress(len(plain))
        extractor.finish()
    except BaseException:
        extractor.abort()
        raise
    return extractor


def _check_target(target: Path, force: bool) -> None:
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} exists and is not a directory.")
    if target.is_dir() and any(target.iterdir()):
        if not force:
            raise ConfigError(
                f"{target} already exists and is not empty; restore into a new directory "
                "or pass --force to replace it."
            )
        if (target / "postmaster.pid").exists():
            raise ConfigError(
                f"{target} holds a data directory with a postmaster.pid; stop that server first."
            )


def restore_backup(
    repo: Repository,
    backup_id: str,
    target: Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
    on_start: Callable[[Manifest, int], None] | None = None,
    workers: int | None = None,
    service_user: str | None = None,
) -> RestoreResult:
    """Restore backup ``backup_id`` (an id, prefix or ``latest``) into the new directory ``target``.

    The directory ends up owned by the service user (mode 0700), holding the backup's files and
    the WAL that makes it consistent; it is not started. ``on_start(manifest, total_bytes)`` is
    called before data flows (for a progress bar).
    """
    began = time.monotonic()
    target = target.resolve()
    _check_target(target, force)
    manifest = repo.read_manifest(repo.resolve_id(backup_id))
    chain = backup_chain(repo, manifest)
    owner = resolve_service_user(service_user or repo.settings.service_user)
    total = sum(m.stream_size for m in chain)
    if on_start:
        on_start(manifest, total)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.pgdr-restore-{os.getpid()}")
    scratch: list[Path] = []
    notes: list[str] = []
    written = 0
    files = 0
    try:
        if staging.exists():
            shutil.rmtree(staging)
        if len(chain) == 1:
            staging.mkdir(mode=0o700)
            owner.own(staging, 0o700)
            key = manifest.authenticate(repo.master_key, f"of backup {manifest.id}")
            ext = extract_backup(
                repo, manifest, key, staging, owner=owner, progress=progress, workers=workers
            )
            written = ext.bytes_written
            files = sum(1 for f in manifest.files if f.kind == "file")
        else:
            written, files = _restore_chain(repo, chain, staging, owner, scratch, progress, workers)
            notes.append(f"Combined {len(chain)} backups with pg_combinebackup.")
        os.sync()
        if target.exists():
            aside = target.with_name(f".{target.name}.pgdr-replaced-{os.getpid()}")
            target.rename(aside)
            staging.rename(target)
            shutil.rmtree(aside, ignore_errors=True)
            notes.append(f"Replaced the previous contents of {target} (--force).")
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        for path in scratch:
            shutil.rmtree(path, ignore_errors=True)
    return RestoreResult(
        backup_id=manifest.id,
        data_dir=target,
        chain=[m.id for m in chain],
        pg_major=manifest.pg_major,
        pg_version=manifest.pg_version,
        bytes_restored=written,
        files=files,
        duration_s=time.monotonic() - began,
        notes=notes,
    )


def _restore_chain(
    repo: Repository,
    chain: list[Manifest],
    staging: Path,
    owner: ServiceUser,
    scratch: list[Path],
    progress: Progress | None,
    workers: int | None,
) -> tuple[int, int]:
    installation = installation_for_major(chain[-1].pg_major, repo.settings.pg_bin)
    dirs: list[Path] = []
    for member in chain:
        part = staging.with_name(f"{staging.name}-{member.id}")
        scratch.append(part)
        part.mkdir(mode=0o700)
        key = member.authenticate(repo.master_key, f"of backup {member.id}")
        extract_backup(repo, member, key, part, owner=None, progress=progress, workers=workers)
        dirs.append(part)
    result = subprocess.run(
        [str(installation.tool("pg_combinebackup")), *map(str, dirs), "-o", str(staging)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise RuntimeFailure(
            f"pg_combinebackup failed: {lines[-1] if lines else 'no output'}".rstrip(".") + "."
        )
    written = 0
    files = 0
    for path in [staging, *staging.rglob("*")]:
        if owner.switch:
            os.lchown(path, owner.uid, owner.gid)
        if path.is_file() and not path.is_symlink():
            written += path.stat().st_size
            files += 1
    staging.chmod(0o700)
    return written, files
