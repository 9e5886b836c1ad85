"""The work the agent schedules for one database; each job returns a short summary dict.

* ``backup``: a base backup (full, or incremental on PostgreSQL 17+) into the primary tier,
  then the primary tier's retention (backups and the WAL they no longer need), then a verified
  copy into each secondary tier and that tier's retention.
* ``restore_test``: the newest backup restored into a throwaway cluster under
  ``$PGDR_HOME/scratch/``, recovered through the repository's WAL to its newest point (or, with
  no WAL, to the end of the backup), checked with ``pg_amcheck`` and the profile's integrity
  check, timed (that time is the proven RTO), recorded in the repository next to the backup, and
  removed whatever happened. The restored timeline is never published into the repository.
* ``drill``: every disaster scenario in its own sandbox (``pgdr drill run all``).

A job raises ``PgdrError`` with one sentence when it could not do its work; the scheduler
records that and retries. A restore test that ran but found damage returns ``passed: False``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from pgdr.agent.database import DatabaseHandle
from pgdr.backup.copy import copy_backup
from pgdr.backup.manifest import format_time, now_utc
from pgdr.backup.repository import Repository
from pgdr.backup.take import take_backup
from pgdr.cluster import LocalCluster, installation_for_major
from pgdr.core.errors import CheckFailed, PgdrError, RuntimeFailure
from pgdr.core.records import new_record_id
from pgdr.drills.scenarios import SCENARIOS, DrillOptions, run_drill
from pgdr.integrity.run import run_check
from pgdr.profile import load_profile
from pgdr.restore.pitr import plan_pitr, run_pitr
from pgdr.restore.scratch import scratch_cluster
from pgdr.restore.target import Target
from pgdr.restore.tested import amcheck_cluster
from pgdr.wal.archive import KEYRING, WalArchive, repository_archive
from pgdr.wal.retention import prune_repository
from pgdr.watch import drill_monitor

SCRATCH_PREFIX = "rt-"  # short: the server's socket path must stay under 107 bytes
# One restore test at a time per agent: each starts a whole server and replays WAL, and two at
# once on a small host starve the databases the agent protects (and each other).
_RESTORE_TESTS = threading.Lock()


def _retention(repo: Repository, unread: list[str]) -> dict[str, Any]:
    """Prune ``repo``; what it had to leave alone (unreadable manifests, and with them every
    WAL file) is added to ``unread``, which fails the job at its end."""
    report, wal = prune_repository(repo)
    if (failure := report.left_alone()) is not None:
        unread.append(failure.message)
    return {
        "repository": repo.name,
        "removed": [d.backup_id for d in report.removed],
        "left_alone": report.invalid,
        "wal": wal.as_dict() if wal else None,
    }


def backup_job(handle: DatabaseHandle, incremental: bool = False) -> dict[str, Any]:
    """Back up, prune, copy to the secondary tiers and prune them."""
    repo = handle.repository()
    manifest = take_backup(repo, handle.target().conninfo, label="agent", incremental=incremental)
    unread: list[str] = []
    summary: dict[str, Any] = {
        "backup_id": manifest.id,
        "kind": manifest.kind,
        "stored_bytes": manifest.stored_size,
        "retention": [_retention(repo, unread)],
        "copies": [],
    }
    for secondary in handle.secondaries():
        copied = copy_backup(repo, secondary, manifest.id)
        summary["copies"].append(copied.as_dict())
        summary["retention"].append(_retention(secondary, unread))
    if unread:  # the backup and copies are done; retention is not, and no WAL goes meanwhile
        raise RuntimeFailure(f"Backup {manifest.id} was taken, but {' '.join(unread)}")
    return summary


def _dbname(handle: DatabaseHandle) -> str:
    params = conninfo_to_dict(handle.target().conninfo)
    return str(params.get("dbname") or "postgres")


def _integrity(handle: DatabaseHandle, cluster: LocalCluster, dbname: str) -> dict[str, Any]:
    """The profile's integrity check on the restored copy; critical findings fail the test."""
    profile = load_profile(handle.db.config.profile or handle.settings.profile)
    report = run_check(cluster.conninfo(dbname), profile)
    counts = report.counts()
    if counts["critical"]:
        raise CheckFailed(
            f"the integrity check found {counts['critical']} critical problem(s) in the "
            "restored copy"
        )
    return {"profile": profile.name, "findings": counts, "skipped": len(report.skipped)}


def _pitr_restore(
    handle: DatabaseHandle, repo: Repository, archive: WalArchive, root: Path
) -> tuple[LocalCluster, dict[str, Any]]:
    plan = plan_pitr(repo, archive, Target("latest", None))
    result = run_pitr(
        repo,
        archive,
        plan,
        root / "data",
        root,
        keep_running=True,
        publish_timeline=False,
    )
    facts = {
        "backup_id": result.backup_id,
        "recovered_to_time": result.recovered_to_time,
        "recovered_to_lsn": result.recovered_to_lsn,
        "wal_segments": result.segments_fetched,
    }
    return LocalCluster(root, handle.settings), facts


def _checks(
    handle: DatabaseHandle, cluster: LocalCluster, major: int, steps: list[str]
) -> dict[str, Any]:
    amcheck_cluster(cluster, installation_for_major(major, handle.settings.pg_bin))
    steps.append("pg_amcheck")
    integrity = _integrity(handle, cluster, _dbname(handle))
    steps.append("integrity check")
    return integrity


def restore_test_job(handle: DatabaseHandle) -> dict[str, Any]:
    """Restore, recover, check, time and record, one database at a time (``_RESTORE_TESTS``)."""
    with _RESTORE_TESTS:
        return _restore_test(handle)


def _restore_test(handle: DatabaseHandle) -> dict[str, Any]:
    """Restore, recover, check, time and record; the throwaway cluster is always removed."""
    repo = handle.repository()
    backups = repo.list_backups()
    if not backups:
        raise CheckFailed("there is no backup to test yet")
    newest = backups[-1]
    began = time.monotonic()
    at = format_time(now_utc())
    steps: list[str] = []
    facts: dict[str, Any] = {"backup_id": newest.id, "recovered_to_time": newest.stop_time}
    passed, detail = False, ""
    try:
        if repo.store.exists(KEYRING):
            facts |= _test_with_wal(handle, repo, steps)
        else:
            purpose = f"{SCRATCH_PREFIX}{handle.name}"
            with scratch_cluster(repo, newest.id, purpose) as (cluster, rr):
                steps.append("restored (no WAL in the repository: to the end of the backup)")
                facts["integrity"] = _checks(handle, cluster, rr.pg_major, steps)
        passed = True
        detail = "restored, recovered, started, pg_amcheck and the integrity check clean"
    except PgdrError as exc:
        detail = exc.message
    result = {
        **facts,
        "passed": passed,
        "duration_s": round(time.monotonic() - began, 3),
        "proven_rto_s": round(time.monotonic() - began, 3) if passed else None,
        "at": at,
        "steps": steps,
        "detail": detail,
        "by": "agent",
        "database": handle.name,
    }
    result["record"] = repo.record_restore_test(str(facts["backup_id"]), result)
    return result


def _test_with_wal(handle: DatabaseHandle, repo: Repository, steps: list[str]) -> dict[str, Any]:
    archive = repository_archive(repo)
    unique = f"{os.getpid() % 100000}{int(time.time()) % 100000}"
    root = handle.settings.home / "scratch" / f"{SCRATCH_PREFIX}{handle.name}-{unique}"
    root.parent.mkdir(parents=True, exist_ok=True)
    root.parent.chmod(0o711)
    try:
        cluster, facts = _pitr_restore(handle, repo, archive, root)
        steps.append("restored and recovered to the newest WAL")
        major = repo.read_manifest(str(facts["backup_id"])).pg_major
        facts["integrity"] = _checks(handle, cluster, major, steps)
        return facts
    except PgdrError as exc:
        tail = server_log_tail(root)
        raise type(exc)(f"{exc.message} Server log: {tail}" if tail else exc.message) from exc
    finally:
        remove_scratch(handle, root)


SERVER_LOG_SIGNS = ("PANIC", "FATAL", "ERROR", "could not", "terminated by signal")
TAIL_CHARS = 1200


def server_log_tail(root: Path, lines: int = 4) -> str:
    """Why a throwaway cluster stopped, kept in the record before the cluster goes: its log's
    last lines saying PANIC/FATAL/ERROR (up to ``lines``), then its last ``lines`` lines."""
    try:
        text = (root / "server.log").read_text(errors="replace")
    except OSError:
        return ""
    all_lines = [line.strip() for line in text.splitlines() if line.strip()]
    signs = [ln for ln in all_lines if any(sign in ln for sign in SERVER_LOG_SIGNS)][-lines:]
    last = [ln for ln in all_lines[-lines:] if ln not in signs]
    tail = " | ".join(signs + last)
    return tail if len(tail) <= TAIL_CHARS else "..." + tail[-TAIL_CHARS:]


def remove_scratch(handle: DatabaseHandle, root: Path) -> None:
    """Stop and delete a throwaway cluster (also one a killed agent left behind)."""
    if (root / "cluster.json").exists():
        with contextlib.suppress(PgdrError, OSError):
            LocalCluster(root, handle.settings).destroy()
    shutil.rmtree(root, ignore_errors=True)


def leftover_scratch(handle: DatabaseHandle) -> list[Path]:
    base = handle.settings.home / "scratch"
    if not base.is_dir():
        return []
    prefixes = (f"{SCRATCH_PREFIX}{handle.name}-",)
    return [p for p in base.iterdir() if p.name.startswith(prefixes)]


def drill_job(handle: DatabaseHandle, scenarios: list[str] | None = None) -> dict[str, Any]:
    """The runbook's quarterly drill (every scenario, or ``scenarios``), each in its own
    sandbox, recorded as one run (``pgdr drill history``)."""
    results = {}
    run_id = new_record_id()
    for name in scenarios or list(SCENARIOS):
        report = run_drill(
            name, handle.settings, DrillOptions(run_id=run_id), monitor=drill_monitor
        )
        results[name] = {
            "passed": report.passed,
            "id": report.id,
            "rto_s": report.rto_s,
            "rpo_s": report.rpo_s,
            "issues": report.issues,
        }
    if not all(r["passed"] for r in results.values()):
        failed = ", ".join(n for n, r in results.items() if not r["passed"])
        raise CheckFailed(f"the drill failed: {failed} (see `pgdr drill history`)")
    return {"run_id": run_id, "scenarios": results}
