"""A snapshot of a database as a backup holds it, for ``pgdr check compare --backup ID``.

The backup is restored into a throwaway cluster (never the live server), the same snapshot
queries run there, and the cluster is removed whatever happens. A comparison is a read: it
leaves ``PGDR_HOME`` as it found it and never creates it (:func:`pgdr.restore.scratch.as_found`).
"""

from __future__ import annotations

from typing import Any

from psycopg.conninfo import conninfo_to_dict

from pgdr.backup.repository import Repository
from pgdr.integrity.snapshot import take_snapshot
from pgdr.profile import Profile
from pgdr.restore.scratch import as_found, scratch_cluster


def snapshot_of_backup(
    repo: Repository, backup_id: str, live_conninfo: str, profile: Profile, timeout: float
) -> dict[str, Any]:
    """Snapshot the database named in ``live_conninfo`` as it is inside backup ``backup_id``."""
    dbname = str(conninfo_to_dict(live_conninfo).get("dbname") or "postgres")
    manifest = repo.read_manifest(repo.resolve_id(backup_id))
    with (
        as_found(repo.settings, "Comparing with a backup"),
        scratch_cluster(repo, manifest.id, "compare") as (cluster, _restored),
    ):
        snapshot = take_snapshot(cluster.conninfo(dbname), profile, timeout)
    snapshot["id"] = f"backup {manifest.id}"
    snapshot["taken_at"] = manifest.stop_datetime.isoformat()
    return snapshot
