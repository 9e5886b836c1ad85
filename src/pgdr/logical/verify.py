"""``pgdr dump list|verify``: what the repository's dumps are, and whether one can be restored.

``verify`` reads every chunk (present, size, SHA-256, authentication), compares the archive's
SHA-256 and has the dump's own major version of ``pg_restore --list`` read its table of contents.
``--restore-test`` goes further: the dump is restored into a throwaway cluster of the same major
version (``$PGDR_HOME/scratch/``, removed afterwards, whatever happened) and the profile's
integrity check runs against it. The result is recorded in the repository beside base backups'
restore tests. What was not checked is said, never passed over.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from contextlib import suppress
from typing import Any

from psycopg import sql

from pgdr.backup.chunks import DamagedBackup, private_dir
from pgdr.backup.manifest import DUMPS, Manifest, format_time, now_utc
from pgdr.backup.repository import DamagedManifest, Repository, RetentionPolicy
from pgdr.backup.retention import PruneReport, prune
from pgdr.cluster import LocalCluster
from pgdr.core.connect import connect, translating
from pgdr.core.errors import PgdrError
from pgdr.integrity.run import run_check
from pgdr.logical.archive import OpenDump, feed_pg_restore, open_dump, plaintext, read_toc
from pgdr.logical.tools import DIRECTORY_SUFFIX
from pgdr.profile import Profile

TOC_TABLE_KINDS = ("TABLE", "TABLE DATA")


DUMP_RETENTION = RetentionPolicy(recovery_window_days=0, daily_days=0, weekly_days=90)


def prune_dumps(repo: Repository, *, dry_run: bool = False) -> PruneReport:
    """The runbook's secondary tier: weekly dumps for 90 days; ``--keep`` dumps stay. Dumps,
    schema dumps and exports are each their own series: an export never displaces a dump."""
    return prune(repo, dry_run=dry_run, area=DUMPS, policy=DUMP_RETENTION)


def list_dumps(repo: Repository) -> tuple[list[Manifest], list[DamagedManifest]]:
    """The dumps and exports whose manifest authenticates (oldest first), and those that cannot
    be read: sealed by another master key, or damaged."""
    return repo.scan_backups(area=DUMPS)


def dump_summary(manifest: Manifest) -> dict[str, Any]:
    directory = bool(manifest.files) and manifest.files[0].path.endswith(DIRECTORY_SUFFIX)
    return manifest.summary() | {
        "database": manifest.database,
        "format": "directory" if directory else "custom",
    }


def verify_dump(
    repo: Repository, dump_id: str, *, restore_test: bool = False, profile: Profile | None = None
) -> dict[str, Any]:
    """Check every chunk and the table of contents; optionally restore and check integrity."""
    dump = open_dump(repo, dump_id)
    if dump.manifest.kind == "export":
        return _verify_export(dump)
    began = time.monotonic()
    try:
        toc = read_toc(dump)
    except DamagedBackup as exc:
        return {
            "dump_id": dump.id,
            "passed": False,
            "problem": exc.message,
            "not_checked": [
                "the table of contents and the restore test, because the dump is damaged"
            ],
        }
    result: dict[str, Any] = {
        "dump_id": dump.id,
        "database": dump.manifest.database,
        "pg_version": dump.manifest.pg_version,
        "chunks_checked": len(dump.manifest.chunks),
        "sha256": "matches",
        "toc_entries": len(toc),
        "tables": sorted({f"{e.schema}.{e.name}" for e in toc if e.kind == "TABLE"}),
        "not_checked": [],
        "passed": True,
    }
    if restore_test:
        assert profile is not None
        result["restore_test"] = _restore_test(dump, profile)
        result["passed"] = bool(result["restore_test"]["passed"])
    else:
        result["not_checked"].append(
            "the dump was not restored (pass --restore-test to restore it into a throwaway "
            "cluster and run the integrity check)"
        )
    result["duration_s"] = round(time.monotonic() - began, 3)
    return result


def _verify_export(dump: OpenDump) -> dict[str, Any]:
    """Every chunk, and every CSV file's SHA-256 against the manifest."""
    files = dump.manifest.files
    digests = [hashlib.sha256() for _ in files]
    offset = 0
    problem = ""
    try:
        for piece in plaintext(dump):
            for entry, digest in zip(files, digests, strict=True):
                start, end = (
                    max(entry.offset, offset),
                    min(entry.offset + entry.size, offset + len(piece)),
                )
                if start < end:
                    digest.update(piece[start - offset : end - offset])
            offset += len(piece)
    except DamagedBackup as exc:
        problem = exc.message
    bad = [e.path for e, d in zip(files, digests, strict=True) if d.hexdigest() != e.digest]
    if bad and not problem:
        problem = f"files differ from their recorded SHA-256: {', '.join(bad)}"
    return {
        "dump_id": dump.id,
        "kind": "export",
        "passed": not problem,
        "problem": problem or None,
        "chunks_checked": len(dump.manifest.chunks),
        "toc_entries": len(files),
        "tables": [e.path for e in files],
        "not_checked": ["CSV contents are not parsed; their hashes are compared"],
    }


def _make_room(cluster: LocalCluster, database: str) -> tuple[str, bool]:
    """The database pg_restore --create connects to, and whether the fresh throwaway cluster's
    own database of the dump's name (``postgres``, ``template1``) was dropped: pg_restore then
    creates it as the dump says (its CREATE DATABASE, settings and comment), as it would into
    a cluster without it, instead of failing on "already exists"."""
    maintenance = "postgres" if database == "template1" else "template1"
    name = sql.Identifier(database)
    with connect(cluster.conninfo(maintenance), autocommit=True) as conn, translating():
        row = conn.execute(
            "SELECT datistemplate FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if row is None:
            return maintenance, False
        if row[0]:
            conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(name))
        conn.execute(sql.SQL("DROP DATABASE {}").format(name))
    return maintenance, True


def _restore_test(dump: OpenDump, profile: Profile) -> dict[str, Any]:
    settings = dump.repo.settings
    at = format_time(now_utc())
    scratch = settings.home / "scratch" / f"dump-test-{dump.id}-{time.time_ns()}"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    scratch.parent.chmod(0o711)
    cluster = LocalCluster(scratch, settings)
    steps: list[str] = []
    outcome: dict[str, Any] = {"passed": False, "at": at}
    try:
        cluster.create(dump.pg_restore_installation())
        cluster.start()
        steps.append("throwaway cluster started")
        database = dump.manifest.database or "restored"
        maintenance, dropped = _make_room(cluster, database)
        if dropped:
            steps.append(f"the throwaway cluster's own empty database {database!r} dropped")
        with private_dir("pgdr-dump-test-") as tmp:
            feed_pg_restore(
                dump,
                [
                    "--create",
                    "--exit-on-error",
                    "--no-owner",
                    "--no-privileges",
                    "-d",
                    cluster.conninfo(maintenance),
                ],
                tmp / "out",
            )
        steps.append("restored with pg_restore --create --exit-on-error")
        report = run_check(cluster.conninfo(database), profile)
        steps.append(f"integrity check ({profile.name})")
        outcome["findings"] = report.counts()
        outcome["passed"] = report.critical == 0 and not report.partial
        outcome["detail"] = (
            "restored and checked: no critical finding"
            if outcome["passed"]
            else f"{report.critical} critical finding(s)"
            + (", partial check" if report.partial else "")
        )
    except PgdrError as exc:
        outcome["detail"] = exc.message
    finally:
        with suppress(PgdrError, OSError):
            cluster.destroy()
        shutil.rmtree(scratch, ignore_errors=True)
    outcome["steps"] = steps
    outcome["record"] = dump.repo.record_restore_test(dump.id, outcome | {"dump_id": dump.id})
    return outcome
