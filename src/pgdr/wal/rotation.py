"""``pgdr key``: the master key in force, and rotating it without rewriting data.

It lives with the WAL because it re-wraps both the backups' data keys and the WAL keyring.

Rotation re-wraps every object sealed under the master key: each backup's data key (stored in
its manifest outside the authenticated fields, so only ``wrapped_key`` is rewritten after the
manifest is checked with the old key) and the WAL keyring ``wal/keyring.json`` (re-signed with
the WAL data key). Only once the new key is shown to open every one of them in every repository
is the old key called retired; until then it stays in force. Rotation is resumable: objects
already wrapped by the new key are checked and skipped, and with the embedded default key file
the new key is kept as ``master.key.new`` until every repository is done, then swapped in; the
old key is kept as ``master.key.retired-<id>``. A manifest that fails authentication is not
sealed by the master key at all (damaged or forged): it is reported, never re-wrapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgdr.backup.manifest import Manifest
from pgdr.backup.repository import Repository
from pgdr.core.errors import ConfigError, PgdrError, RuntimeFailure
from pgdr.crypto import MasterKey, load_master_key
from pgdr.crypto.keys import default_key_path, generate_key_text, read_key_file, write_key_file
from pgdr.wal.archive import WalArchive

PENDING_NAME = "master.key.new"


@dataclass
class RotationReport:
    old_key_id: str
    new_key_id: str
    rewrapped: dict[str, int] = field(default_factory=dict)
    already: dict[str, int] = field(default_factory=dict)
    wal_keyring: dict[str, str] = field(default_factory=dict)
    damaged: dict[str, list[str]] = field(default_factory=dict)
    key_file: str | None = None
    retired_key_file: str | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def describe_master_key(repo: Repository) -> dict[str, Any]:
    """Which key is in force for ``repo`` (never creating one) and which keys sealed it."""
    sealed = sorted(repo.sealed_key_ids())
    key = repo.master_key
    return {
        "key_id": key.key_id,
        "origin": key.origin,
        "repository": repo.name,
        "sealed_with": sealed,
        "opens_repository": all(k == key.key_id for k in sealed),
    }


def rotate_repository(
    repo: Repository, old: MasterKey, new: MasterKey, report: RotationReport
) -> None:
    """Re-wrap every backup's data key and the WAL keyring of ``repo`` under ``new``."""
    rewrapped = already = 0
    damaged: list[str] = []
    with repo.locked("key rotation"):
        for backup_id, names in sorted(repo.backup_dirs().items()):
            if "manifest.json" not in names:
                continue
            try:
                manifest = repo.read_manifest(backup_id, authenticate=False)
                if manifest.key_id == new.key_id:
                    manifest.authenticate(new, f"of backup {backup_id} in {repo.name}")
                    already += 1
                    continue
                data_key = manifest.authenticate(old, f"of backup {backup_id} in {repo.name}")
            except PgdrError as exc:
                damaged.append(f"{backup_id}: {exc.message}")
                continue
            manifest.wrapped_key = new.wrap(data_key)
            _check(manifest, new)
            repo.store.put(repo.manifest_key(backup_id), manifest.to_json())
            rewrapped += 1
        report.wal_keyring[repo.name] = WalArchive.rewrap_keyring(repo.store, old, new)
    report.rewrapped[repo.name] = rewrapped
    report.already[repo.name] = already
    report.damaged[repo.name] = damaged


def _check(manifest: Manifest, new: MasterKey) -> None:
    manifest.authenticate(new, f"of backup {manifest.id}")


def check_new_key_opens_all(repo: Repository, new: MasterKey, damaged: list[str]) -> None:
    """Raise unless ``new`` opens every manifest (but the damaged ones) and the WAL keyring."""
    for backup_id, names in sorted(repo.backup_dirs().items()):
        if "manifest.json" not in names or any(d.startswith(f"{backup_id}:") for d in damaged):
            continue
        try:
            _check(repo.read_manifest(backup_id, authenticate=False), new)
        except PgdrError as exc:
            raise RuntimeFailure(
                f"After re-wrapping, the new key does not open backup {backup_id} in "
                f"{repo.name} ({exc.message}); the old key stays in force."
            ) from exc
    try:
        WalArchive.rewrap_keyring(repo.store, new, new)
    except PgdrError as exc:
        raise RuntimeFailure(
            f"After re-wrapping, the new key does not open the WAL keyring of {repo.name} "
            f"({exc.message}); the old key stays in force."
        ) from exc


def _new_key(home: Path, old: MasterKey, new_key_file: Path | None) -> MasterKey:
    default_file = default_key_path(home)
    pending = default_file.with_name(PENDING_NAME)
    if new_key_file is not None:
        return MasterKey(read_key_file(new_key_file, "The new key file"), str(new_key_file))
    if old.origin == str(default_file):
        if not pending.exists():
            write_key_file(pending, generate_key_text())
        return MasterKey(read_key_file(pending, "The key file"), str(pending))
    raise ConfigError(
        f"The master key comes from {old.origin}; give the new key with --new-key-file FILE "
        "and switch to it once the rotation is done."
    )


def rotate_master_key(
    repos: list[Repository], home: Path, new_key_file: Path | None = None
) -> RotationReport:
    """Rotate every repository in ``repos`` from the current master key to a new one."""
    old, _note = load_master_key(home)
    new = _new_key(home, old, new_key_file)
    if new.key_id == old.key_id:
        raise ConfigError("The new key is the key already in use.")
    report = RotationReport(old.key_id, new.key_id)
    for repo in repos:
        rotate_repository(repo, old, new, report)
    for repo in repos:
        check_new_key_opens_all(repo, new, report.damaged[repo.name])
    _retire_old_key(home, old, new_key_file, report)
    return report


def _retire_old_key(
    home: Path, old: MasterKey, new_key_file: Path | None, report: RotationReport
) -> None:
    default_file = default_key_path(home)
    if old.origin == str(default_file) and new_key_file is None:
        retired = default_file.with_name(f"master.key.retired-{old.key_id}")
        default_file.rename(retired)
        default_file.with_name(PENDING_NAME).rename(default_file)
        report.key_file = str(default_file)
        report.retired_key_file = str(retired)
        report.note = (
            f"The new key is in {default_file} and opens every backup and the WAL; the old one "
            f"was kept as {retired} for copies of the repository elsewhere. Delete it once "
            "they are rotated too."
        )
    else:
        report.key_file = str(new_key_file)
        report.note = (
            f"Every backup's data key and the WAL keyring are now wrapped by the key in "
            f"{new_key_file}; point PGDR_ENCRYPTION_KEY or PGDR_ENCRYPTION_KEY_FILE at it now."
        )
