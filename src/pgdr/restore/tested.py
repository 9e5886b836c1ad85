"""The restore test: the proof a backup can actually be restored, recorded in the repository.

``restore_test`` restores a backup into a throwaway cluster, runs ``pg_verifybackup`` on the
restored files, starts the cluster and runs ``pg_amcheck --all``; the result (passed or not, the
steps reached, why it stopped) is recorded by the repository whatever happened. The throwaway
cluster is always removed; the backup itself is only read.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pgdr.backup.chunks import DamagedBackup
from pgdr.backup.manifest import format_time, now_utc
from pgdr.backup.repository import Repository
from pgdr.cluster import LocalCluster, PgInstallation, installation_for_major
from pgdr.core import runner
from pgdr.core.errors import PgdrError
from pgdr.restore.base import RestoreResult
from pgdr.restore.scratch import scratch_cluster

AMCHECK_TIMEOUT_S = 3600.0


def restore_test(repo: Repository, backup_id: str) -> dict[str, Any]:
    """Restore into a throwaway cluster, pg_verifybackup, start, pg_amcheck; record the result."""
    began = time.monotonic()
    at = format_time(now_utc())
    steps: list[str] = []
    passed = False
    detail = ""

    def verify_files(restored: RestoreResult) -> None:
        steps.append("restored")
        installation = installation_for_major(restored.pg_major, repo.settings.pg_bin)
        runner.run([installation.tool("pg_verifybackup"), restored.data_dir], error=DamagedBackup)
        steps.append("pg_verifybackup")

    try:
        with scratch_cluster(
            repo, backup_id, "restore-test", check_files=True, before_start=verify_files
        ) as (cluster, restored):
            steps.append("started")
            amcheck_cluster(
                cluster, installation_for_major(restored.pg_major, repo.settings.pg_bin)
            )
            steps.append("pg_amcheck")
        passed = True
        detail = "restored, verified with pg_verifybackup, started, pg_amcheck --all clean"
    except PgdrError as exc:
        detail = exc.message
    result = {
        "backup_id": backup_id,
        "passed": passed,
        "duration_s": round(time.monotonic() - began, 3),
        "at": at,
        "steps": steps,
        "detail": detail,
    }
    result["record"] = repo.record_restore_test(backup_id, result)
    return result


def amcheck_cluster(cluster: LocalCluster, installation: PgInstallation) -> None:
    argv: list[str | Path] = [installation.tool("pg_amcheck"), "-h", cluster.socket_dir]
    result = runner.run(
        [*argv, "-p", str(cluster.port), "-U", "postgres", "--all", "--install-missing"],
        timeout_s=AMCHECK_TIMEOUT_S,
        check=False,
        error=DamagedBackup,
    )
    if result.returncode != 0:
        raise DamagedBackup(
            f"pg_amcheck found problems: {runner.last_line(result.stdout + result.stderr)}"
        )
