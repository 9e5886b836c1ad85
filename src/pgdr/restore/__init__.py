"""Restores: a base backup from the repository into a new data directory, then (optionally)
started as a new cluster.

``restore_backup`` lays the files down (full or an incremental chain via pg_combinebackup);
``adopt_restored`` makes the directory a pgdr cluster that can be started; ``scratch_cluster``
does both for a throwaway copy that is always removed. Point-in-time recovery
builds on these by writing recovery settings into the restored directory before starting it.

Only laying files down is re-exported here; starting a restored copy (:mod:`pgdr.restore.start`,
:mod:`pgdr.restore.scratch`) needs psycopg, which a plain restore starts faster without.
"""

from pgdr.backup.chunks import DamagedBackup, fetch_chunk
from pgdr.restore.base import (
    RestoreResult,
    backup_chain,
    extract_backup,
    restore_backup,
)

__all__ = [
    "DamagedBackup",
    "RestoreResult",
    "backup_chain",
    "extract_backup",
    "fetch_chunk",
    "restore_backup",
]
