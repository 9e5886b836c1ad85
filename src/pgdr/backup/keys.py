"""``pgdr key rotate``: re-wrap every data key under a new master key, without rewriting data.

Each backup's data key is stored wrapped in its manifest, outside the manifest's authenticated
fields, so rotation rewrites only ``wrapped_key`` (after checking the manifest with the old key).
Rotation is resumable: manifests already wrapped by the new key are skipped, and with the
embedded default key file the new key is kept as ``master.key.new`` until every repository is
done, then swapped in; the old key is kept as ``master.key.retired-<id>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgdr.backup.manifest import Manifest
from pgdr.backup.repository import Repository
from pgdr.core.errors import ConfigError
from pgdr.core.secrets import read_secret_file
from pgdr.crypto import MasterKey, load_master_key
from pgdr.crypto.keys import decode_key, generate_key_text, write_key_file

PENDING_NAME = "master.key.new"


@dataclass
class RotationReport:
    old_key_id: str
    new_key_id: str
    rewrapped: dict[str, int] = field(default_factory=dict)
    already: dict[str, int] = field(default_factory=dict)
    key_file: str | None = None
    retired_key_file: str | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def rotate_repository(repo: Repository, old: MasterKey, new: MasterKey) -> tuple[int, int]:
    """Re-wrap the data key of every backup in ``repo``; returns (rewrapped, already new)."""
    rewrapped = already = 0
    with repo.locked("key rotation"):
        for backup_id, names in sorted(repo.backup_dirs().items()):
            if "manifest.json" not in names:
                continue
            manifest = repo.read_manifest(backup_id, authenticate=False)
            if manifest.key_id == new.key_id:
                already += 1
                continue
            data_key = manifest.authenticate(old, f"of backup {backup_id} in {repo.name}")
            manifest.wrapped_key = new.wrap(data_key)
            _check(manifest, new)
            repo.store.put(repo.manifest_key(backup_id), manifest.to_json())
            rewrapped += 1
    return rewrapped, already


def _check(manifest: Manifest, new: MasterKey) -> None:
    manifest.authenticate(new, f"of backup {manifest.id}")


def rotate_master_key(
    repos: list[Repository], home: Path, new_key_file: Path | None = None
) -> RotationReport:
    """Rotate every repository in ``repos`` from the current master key to a new one."""
    old, _note = load_master_key(home, generate=False)
    default_file = home / "keys" / "master.key"
    pending = default_file.with_name(PENDING_NAME)
    uses_default = old.origin == str(default_file)
    if new_key_file is not None:
        text = read_secret_file(new_key_file, "The new key file")
        new = MasterKey(decode_key(text, f"The new key file {new_key_file}"), str(new_key_file))
    elif uses_default:
        if not pending.exists():
            write_key_file(pending, generate_key_text())
        new = MasterKey(decode_key(pending.read_text(), str(pending)), str(pending))
    else:
        raise ConfigError(
            f"The master key comes from {old.origin}; give the new key with --new-key-file FILE "
            "and switch to it once the rotation is done."
        )
    if new.key_id == old.key_id:
        raise ConfigError("The new key is the key already in use.")
    report = RotationReport(old.key_id, new.key_id)
    for repo in repos:
        done, already = rotate_repository(repo, old, new)
        report.rewrapped[repo.name] = done
        report.already[repo.name] = already
    if uses_default and new_key_file is None:
        retired = default_file.with_name(f"master.key.retired-{old.key_id}")
        default_file.rename(retired)
        pending.rename(default_file)
        report.key_file = str(default_file)
        report.retired_key_file = str(retired)
        report.note = (
            f"The new key is in {default_file}; the old one was kept as {retired} for copies "
            "of the repository elsewhere. Delete it once they are rotated too."
        )
    else:
        report.key_file = str(new_key_file)
        report.note = (
            f"Every data key is now wrapped by the key in {new_key_file}; point "
            "PGDR_ENCRYPTION_KEY or PGDR_ENCRYPTION_KEY_FILE at it now."
        )
    return report
