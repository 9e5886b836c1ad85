"""``pgdr key``: the master key in force, and rotating it without rewriting data.

It lives with the WAL because it re-wraps both the backups' data keys and the WAL keyring.

Rotation re-wraps every object sealed under the master key: the data key of each backup, dump
and CSV export (``backups/`` and ``dumps/``; stored in its manifest outside the authenticated
fields, so only ``wrapped_key`` is rewritten after the manifest is checked with the old key) and
the WAL keyring ``wal/keyring.json`` (re-signed with
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

from pgdr.backup.manifest import BACKUPS, DUMPS
from pgdr.backup.repository import NOUNS, Repository
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
    rewrapped_dumps: dict[str, int] = field(default_factory=dict)  # dumps and exports
    already_dumps: dict[str, int] = field(default_factory=dict)
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
    """Re-wrap the data key of every backup, dump and export, and the WAL keyring of ``repo``,
    under ``new``."""
    with repo.locked("key rotation"):
        backups = _rewrap_area(repo, BACKUPS, old, new)
        dumps = _rewrap_area(repo, DUMPS, old, new)
        report.wal_keyring[repo.name] = WalArchive.rewrap_keyring(repo.store, old, new)
    report.rewrapped[repo.name], report.already[repo.name] = backups.rewrapped, backups.already
    report.rewrapped_dumps[repo.name] = dumps.rewrapped
    report.already_dumps[repo.name] = dumps.already
    report.damaged[repo.name] = backups.damaged + dumps.damaged


@dataclass
class _AreaRewrap:
    rewrapped: int = 0
    already: int = 0
    damaged: list[str] = field(default_factory=list)


def _where(repo: Repository, area: str, object_id: str) -> str:
    return f"of {NOUNS[area][0]} {object_id} in {repo.name}"


def _rewrap_area(repo: Repository, area: str, old: MasterKey, new: MasterKey) -> _AreaRewrap:
    """Re-wrap every manifest's data key in ``area`` (``backups/`` or ``dumps/``); one already
    wrapped by ``new`` is checked and skipped, one the old key does not open is reported."""
    done = _AreaRewrap()
    for object_id in repo.complete_ids(area):
        where = _where(repo, area, object_id)
        try:
            manifest = repo.read_manifest(object_id, authenticate=False, area=area)
            if manifest.key_id == new.key_id:
                manifest.authenticate(new, where)
                done.already += 1
                continue
            data_key = manifest.authenticate(old, where)
        except PgdrError as exc:
            done.damaged.append(f"{object_id}: {exc.message}")
            continue
        manifest.wrapped_key = new.wrap(data_key)
        manifest.authenticate(new, where)
        repo.store.put(repo.manifest_key(object_id, area), manifest.to_json())
        done.rewrapped += 1
    return done


def check_new_key_opens_all(repo: Repository, new: MasterKey, damaged: list[str]) -> None:
    """Raise unless ``new`` opens every manifest of a backup, dump or export (but the damaged
    ones) and the WAL keyring."""
    for area in (BACKUPS, DUMPS):
        for object_id in repo.complete_ids(area):
            if any(d.startswith(f"{object_id}:") for d in damaged):
                continue
            where = _where(repo, area, object_id)
            try:
                repo.read_manifest(object_id, authenticate=False, area=area).authenticate(
                    new, where
                )
            except PgdrError as exc:
                raise RuntimeFailure(
                    f"After re-wrapping, the new key does not open the manifest {where} "
                    f"({exc.message}); the old key stays in force."
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
            f"The new key is in {default_file} and opens every backup, dump and export and the "
            "WAL; the old one "
            f"was kept as {retired} for copies of the repository elsewhere. Delete it once "
            "they are rotated too."
        )
    else:
        report.key_file = str(new_key_file)
        report.note = (
            "The data key of every backup, dump and export and the WAL keyring are now wrapped "
            f"by the key in "
            f"{new_key_file}; point PGDR_ENCRYPTION_KEY or PGDR_ENCRYPTION_KEY_FILE at it now."
        )
