"""Throwaway clusters restored from a backup, for restore tests and comparisons with a backup.

``scratch_cluster`` restores a backup under ``$PGDR_HOME/scratch/``, lets the caller inspect the
files before the server starts, starts it on a free port with the matching binaries, yields it,
and always removes it afterwards, whatever happened. ``as_found`` wraps a throwaway of a read
command (a comparison, a dry run), which leaves ``PGDR_HOME`` as it found it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from pgdr.backup.repository import Repository
from pgdr.cluster import LocalCluster
from pgdr.cluster.runtime import RUNTIME, remove_unused_runtime
from pgdr.config import PgdrSettings
from pgdr.core.errors import ConfigError, PgdrError
from pgdr.restore.base import RestoreResult, restore_backup
from pgdr.restore.staging import RECORDS
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


@contextmanager
def as_found(settings: PgdrSettings, what: str) -> Iterator[None]:
    """For a read command that needs a throwaway under ``$PGDR_HOME/scratch``: a ``PGDR_HOME``
    that does not exist is said, not created (``what`` names the command), and the ``scratch``
    and ``restores`` directories go again when the block made them and they are empty at the
    end (one that another process is using keeps its contents, so it stays). So does the copy
    of the embedded PostgreSQL staged under ``runtime`` for a service user who cannot reach the
    installed one (:mod:`pgdr.cluster.runtime`), when the block staged it: the throwaway that
    ran from it is gone by then, and it stays when another process has started a cluster from
    it meanwhile."""
    home = settings.home
    if not home.is_dir():
        raise ConfigError(
            f"{what} restores a throwaway copy under PGDR_HOME, and {home} does not exist; "
            "create it (or point PGDR_HOME at pgdr's directory)."
        )
    new = [d for d in (home / "scratch", home / RECORDS) if not d.exists()]
    staged = None if (home / RUNTIME).exists() else home / RUNTIME
    try:
        yield
    finally:
        _remove_empty(new)
        if staged is not None and staged.exists():
            remove_unused_runtime(home)


def _remove_empty(directories: list[Path]) -> None:
    for directory in directories:
        with suppress(OSError):
            directory.rmdir()
