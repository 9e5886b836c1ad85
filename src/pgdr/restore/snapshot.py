"""A snapshot of a database as a backup holds it, for ``pgdr check compare --backup ID``.

The backup is restored into a throwaway cluster (never the live server), the same snapshot
queries run there, and the cluster is removed whatever happens. A comparison is a read: it
leaves ``PGDR_HOME`` as it found it (the ``scratch`` and ``restores`` directories it needed are
removed again when it made them) and never creates ``PGDR_HOME`` itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from pgdr.backup.repository import Repository
from pgdr.core.errors import ConfigError
from pgdr.integrity.snapshot import take_snapshot
from pgdr.profile import Profile
from pgdr.restore.scratch import scratch_cluster
from pgdr.restore.staging import RECORDS


def snapshot_of_backup(
    repo: Repository, backup_id: str, live_conninfo: str, profile: Profile, timeout: float
) -> dict[str, Any]:
    """Snapshot the database named in ``live_conninfo`` as it is inside backup ``backup_id``."""
    dbname = str(conninfo_to_dict(live_conninfo).get("dbname") or "postgres")
    manifest = repo.read_manifest(repo.resolve_id(backup_id))
    home = repo.settings.home
    if not home.is_dir():
        raise ConfigError(
            f"Comparing with a backup restores it into a throwaway cluster under PGDR_HOME, "
            f"and {home} does not exist; create it (or point PGDR_HOME at pgdr's directory)."
        )
    with (
        _removed_if_new(home / "scratch", home / RECORDS),
        scratch_cluster(repo, manifest.id, "compare") as (cluster, _restored),
    ):
        snapshot = take_snapshot(cluster.conninfo(dbname), profile, timeout)
    snapshot["id"] = f"backup {manifest.id}"
    snapshot["taken_at"] = manifest.stop_datetime.isoformat()
    return snapshot


@contextmanager
def _removed_if_new(*directories: Path) -> Iterator[None]:
    """Remove those of ``directories`` that did not exist before and are empty at the end (one
    another process is using keeps its contents, so it stays)."""
    new = [d for d in directories if not d.exists()]
    try:
        yield
    finally:
        for directory in new:
            with suppress(OSError):
                directory.rmdir()
