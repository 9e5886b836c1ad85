"""Restores: a base backup from the repository into a new data directory, then (optionally)
started as a new cluster.

``restore_backup`` lays the files down (full or an incremental chain via pg_combinebackup);
``adopt_restored`` makes the directory a pgdr cluster that can be started; ``scratch_cluster``
does both for a throwaway copy that is always removed. Point-in-time recovery
builds on these by writing recovery settings into the restored directory before starting it.
"""

from pgdr.backup.chunks import DamagedBackup, fetch_chunk
from pgdr.restore.base import (
    RestoreResult,
    backup_chain,
    extract_backup,
    restore_backup,
)
from pgdr.restore.scratch import scratch_cluster
from pgdr.restore.start import adopt_restored, new_cluster_dir, start_restored

__all__ = [
    "DamagedBackup",
    "RestoreResult",
    "adopt_restored",
    "backup_chain",
    "extract_backup",
    "fetch_chunk",
    "new_cluster_dir",
    "restore_backup",
    "scratch_cluster",
    "start_restored",
]
