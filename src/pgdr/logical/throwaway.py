"""A throwaway copy of the database as it was: a base backup restored (and, with a recovery
target, rolled forward through the archived WAL) into ``$PGDR_HOME/scratch/``, started on a free
port, and removed afterwards whatever happened.

One vehicle for ``pgdr undelete`` and ``pgdr restore-table --from-backup``. It writes no second
restore: the backup alone goes through :func:`pgdr.restore.scratch.scratch_cluster`, a target
through :func:`pgdr.restore.pitr.plan_pitr` and :func:`~pgdr.restore.pitr.run_pitr`. The plan is
checked before anything is written (a target outside the recovery window is refused there), and
the copy's new timeline is never published to the repository: the production server's WAL
history is not touched by a throwaway copy.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from pgdr.backup.repository import Repository
from pgdr.cluster import LocalCluster
from pgdr.core.errors import PgdrError
from pgdr.restore.pitr import PitrResult, plan_pitr, run_pitr
from pgdr.restore.scratch import as_found, scratch_cluster
from pgdr.restore.target import Target
from pgdr.wal.archive import WalArchive


@contextmanager
def throwaway_copy(
    repo: Repository,
    backup_id: str | None,
    target: Target | None,
    purpose: str,
    *,
    read_only: bool = False,
) -> Iterator[tuple[LocalCluster, PitrResult | None]]:
    """Yield a running copy restored from ``backup_id`` (to ``target`` when given); remove it
    on exit. Without a target the copy is the backup itself (``backup_id`` required); with one,
    ``backup_id`` None lets the plan choose the backup. ``read_only`` (a dry run) leaves
    ``PGDR_HOME`` as it found it and never creates it."""
    if read_only:
        with as_found(repo.settings, f"A dry run of {purpose}"):
            yield from _copy(repo, backup_id, target, purpose, remember=False)
    else:
        yield from _copy(repo, backup_id, target, purpose, remember=True)


def _copy(
    repo: Repository, backup_id: str | None, target: Target | None, purpose: str, remember: bool
) -> Iterator[tuple[LocalCluster, PitrResult | None]]:
    if target is None:
        assert backup_id is not None, "a copy without a recovery target needs a backup"
        with scratch_cluster(repo, backup_id, purpose) as (cluster, _restored):
            yield cluster, None
        return
    archive = WalArchive.open(repo.store, repo.master_key)
    plan = plan_pitr(repo, archive, target, backup_id)
    scratch = repo.settings.home / "scratch" / f"{purpose}-{time.time_ns()}"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    scratch.parent.chmod(0o711)
    try:
        restored = run_pitr(
            repo,
            archive,
            plan,
            scratch / "data",
            scratch,
            keep_running=True,
            publish_timeline=False,
            remember=remember,
        )
        yield LocalCluster(scratch, repo.settings), restored
    finally:
        with suppress(PgdrError, OSError):
            LocalCluster(scratch, repo.settings).destroy()
        shutil.rmtree(scratch, ignore_errors=True)
