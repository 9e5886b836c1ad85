"""Choosing a backup: the newest complete one, or the newest that ends before a target.

Point-in-time recovery starts from the newest backup that finished before the target time or
LSN (on the target's timeline) and replays WAL from its start LSN.
"""

from __future__ import annotations

from datetime import datetime

from pgdr.backup.manifest import Manifest
from pgdr.backup.repository import Repository
from pgdr.errors import ConfigError


def parse_lsn(text: str) -> int:
    """``'0/3000028'`` -> an integer, for comparing LSNs."""
    try:
        high, low = text.split("/")
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise ConfigError(f"{text!r} is not an LSN (like 0/3000028).") from None


def choose_backup(
    repo: Repository,
    *,
    before_time: datetime | None = None,
    before_lsn: str | None = None,
    timeline: int | None = None,
) -> Manifest:
    """The newest complete, authenticated backup that can reach the target.

    With no target, the newest backup. ``before_time`` (timezone-aware) and ``before_lsn``
    select backups that stopped at or before it; ``timeline`` limits to backups taken on a
    timeline not newer than it.
    """
    candidates = []
    for manifest in repo.list_backups():
        if before_time is not None and manifest.stop_datetime > before_time:
            continue
        if before_lsn is not None and parse_lsn(manifest.stop_lsn) > parse_lsn(before_lsn):
            continue
        if timeline is not None and manifest.timeline > timeline:
            continue
        candidates.append(manifest)
    if not candidates:
        target = before_time.isoformat() if before_time else before_lsn
        raise ConfigError(
            f"The repository {repo.name} holds no backup that finished before {target}."
            if target
            else f"The repository {repo.name} ({repo.url}) holds no backups yet."
        )
    chosen = candidates[-1]
    chosen.authenticate(repo.master_key, f"of backup {chosen.id}")
    return chosen
