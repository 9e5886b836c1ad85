"""What this machine last saw of each repository: the newest backup it took, the newest WAL.

A repository that silently lost its newest backups or WAL (deleted by mistake, a bucket
lifecycle rule, an attacker without the key) still looks consistent: every remaining object
authenticates. So pgdr keeps its own memory outside the repository, in
``$PGDR_HOME/seen/<repository>.json``: the last backup it took there (id and stop LSN) and, per
timeline, the newest WAL segment number a restore or backup saw there. A restore of the latest
state compares the repository against it (see :mod:`pgdr.restore.pitr`). The record only ever
moves forward; it is written by commands that already write (backups, restores).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from pgdr.backup.repository import Repository


def _path(repo: Repository) -> Path:
    digest = hashlib.sha256(repo.store.url.encode()).hexdigest()[:16]
    return repo.settings.home / "seen" / f"{digest}.json"


def seen(repo: Repository) -> dict[str, Any]:
    """The record for ``repo`` (empty when this machine never wrote one)."""
    try:
        data: dict[str, Any] = json.loads(_path(repo).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(repo: Repository, data: dict[str, Any]) -> None:
    path = _path(repo)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data | {"url": repo.store.url, "updated_at": time.time()}))
    tmp.replace(path)


def remember_backup(repo: Repository, backup_id: str, stop_lsn: str, stop_time: str) -> None:
    data = seen(repo)
    if str(data.get("last_backup", "")) < backup_id:
        data |= {"last_backup": backup_id, "last_backup_lsn": stop_lsn, "last_backup_at": stop_time}
        _write(repo, data)


def remember_wal(repo: Repository, timeline: int, segno: int) -> None:
    data = seen(repo)
    wal: dict[str, int] = data.get("wal", {})
    if wal.get(str(timeline), -1) < segno:
        wal[str(timeline)] = segno
        _write(repo, data | {"wal": wal})
