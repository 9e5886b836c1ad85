"""Throwaway clusters restored from a backup, for restore tests and comparisons with a backup.

``scratch_cluster`` restores a backup under ``$PGDR_HOME/scratch/``, lets the caller inspect the
files before the server starts, starts it on a free port with the matching binaries, yields it,
and always removes it afterwards, whatever happened.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from pgdr.backup.repository import Repository
from pgdr.cluster import LocalCluster
from pgdr.core.errors import PgdrError
from pgdr.restore.base import RestoreResult, restore_backup
from pgdr.restore.start import adopt_restored


@contextmanager
def scratch_cluster(
    repo: Repository,
    backup_id: str,
    purpose: str,
    *,
    check_files: bool = False,
    before_start: Callable[[RestoreResult], None] | None = None,
) -> Iterator[tuple[LocalCluster, RestoreResult]]:
    """Restore ``backup_id`` into a scratch cluster, start it, yield it; remove it on exit."""
    settings = repo.settings
    scratch = settings.home / "scratch" / f"{purpose}-{backup_id}-{time.time_ns()}"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    scratch.parent.chmod(0o711)
    cluster: LocalCluster | None = None
    try:
        restored = restore_backup(repo, backup_id, scratch / "data", check_files=check_files)
        if before_start is not None:
            before_start(restored)
        cluster = adopt_restored(settings, restored.data_dir, restored.pg_major, scratch)
        cluster.start()
        yield cluster, restored
    finally:
        if cluster is not None:
            with suppress(PgdrError, OSError):
                cluster.destroy()
        shutil.rmtree(scratch, ignore_errors=True)
