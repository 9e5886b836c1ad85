"""Checks of the protection itself: failed backups, key files, drills in the incident store."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path

import filelock
import psycopg

from conftest import Server, run_cli
from pgdr.config import PgdrSettings
from pgdr.core.severity import Severity
from pgdr.incident.store import IncidentLog
from pgdr.monitoring.protection import (
    ProtectionConfig,
    Sources,
    check_key_files,
    check_slot,
    check_wal_gap,
    check_wal_streamer,
    protection_checks,
)
from pgdr.storage.lock import LOCAL_LOCK_NAME
from pgdr.wal.status import WalStatus
from pgdr.watch import watch_checks
from pgdr.watch.integrity import check_integrity
from pgdr.watch.sources import import_sources


def test_a_failed_backup_is_a_p1_until_one_succeeds(
    pg18: Server, cli_env: dict[str, str], tmp_path: Path
) -> None:
    home, repo = tmp_path / "home", tmp_path / "repo"
    env = cli_env | {
        "PGDR_HOME": str(home),
        "PGDR_REPO": str(repo),
        "DATABASE_URL": pg18.new_database(),
    }
    repo.mkdir()
    now = time.time()
    lock = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "operation": "backup",
        "started_at": now,
        "refreshed_at": now,
    }
    (repo / "lock.json").write_text(json.dumps(lock))  # another backup holds the repository
    holder = filelock.FileLock(repo / LOCAL_LOCK_NAME)  # ... and its flock
    holder.acquire()
    try:
        result = run_cli("backup", env=env)
    finally:
        holder.release()
    assert result.code == 3 and "busy" in result.stderr
    settings = PgdrSettings(home=home, repo=str(repo))
    results = {r.name: r for r in (c() for c in protection_checks(settings, env["DATABASE_URL"]))}
    failed = results["backup_failed"]
    assert not failed.ok and failed.severity is Severity.P1 and "busy" in failed.message
    assert not results["backup_age"].ok and "no backup" in results["backup_age"].message
    assert results["wal_streamer"].skipped and "holds no WAL" in results["wal_streamer"].message


def test_key_files_missing_or_too_open(tmp_path: Path) -> None:
    key = tmp_path / "master.key"
    key.write_text("secret")
    key.chmod(0o644)
    missing = tmp_path / "gone.key"
    result = check_key_files([key, missing], required=[missing])
    assert not result.ok and result.severity is Severity.P1
    assert "mode 644" in result.message and "gone.key is missing" in result.message
    key.chmod(0o600)
    assert check_key_files([key], required=[key]).ok


def _drill(home: Path, record_id: str, passed: bool) -> None:
    directory = home / "records" / "drills"
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "kind": "drill",
        "id": record_id,
        "scenario": "pitr",
        "passed": passed,
        "started_at": "2026-11-30T20:00:00+00:00",
        "finished_at": "2026-11-30T20:05:00+00:00",
        "issues": [] if passed else ["RPO 12 s over the 5 s target"],
    }
    (directory / f"{record_id}.json").write_text(json.dumps(record))


def test_a_failed_drill_is_an_incident_until_one_passes(tmp_path: Path) -> None:
    log = IncidentLog(tmp_path / "records" / "incidents")
    _drill(tmp_path, "20261130T200000000000Z", passed=False)
    import_sources(log, tmp_path)
    import_sources(log, tmp_path)  # imported once
    (incident,) = log.open_incidents()
    assert incident.check == "drill:pitr" and incident.source == "drill"
    assert "RPO 12 s" in incident.message and incident.severity == "P2"
    _drill(tmp_path, "20261130T210000000000Z", passed=True)
    import_sources(log, tmp_path)
    assert log.open_incidents() == [] and len(log.all()) == 1


def test_a_recorded_check_feeds_the_integrity_check_with_its_severities(
    db18: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    records = home / "records"
    env = cli_env | {"PGDR_HOME": str(home), "DATABASE_URL": db18}
    assert check_integrity(records).skipped  # no record yet: never a pass
    clean = run_cli("check", "--json", env=env)
    assert clean.code == 0, clean.stderr
    record = Path(json.loads(clean.stdout)["record"])
    assert record.parent == records / "integrity-checks"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert check_integrity(records).ok
    with psycopg.connect(db18, autocommit=True) as conn:
        conn.execute(
            "UPDATE embeddings SET embedding = NULL WHERE id IN (SELECT id FROM embeddings LIMIT 1)"
        )
    bad = run_cli("check", "--json", env=env)
    assert bad.code == 1, bad.stderr
    top = json.loads(bad.stdout)["summary"]["priority"]
    result = check_integrity(records)
    assert not result.ok and not result.skipped
    assert (
        result.severity == Severity(top) and "finding(s) in the last `pgdr check`" in result.message
    )
    rounds = {r.name: r for r in (c() for c in watch_checks(PgdrSettings(home=home), None))}
    assert rounds["integrity"].severity == Severity(top)


def test_runbook_severities_of_wal_and_slot_checks(pg18: Server, tmp_path: Path) -> None:
    settings = PgdrSettings(home=tmp_path)
    silent = WalStatus("r", "1", 16 << 20, problems=["the streamer is silent"], lag_bytes=600_000)
    assert check_wal_streamer(Sources(settings, None, wal=silent)).severity is Severity.P1
    silent.synchronous = True  # commits block while the synchronous standby is silent
    assert check_wal_streamer(Sources(settings, None, wal=silent)).severity is Severity.P0
    gap = WalStatus("r", "1", 16 << 20, gaps=["000000010000000000000003"])
    assert check_wal_gap(Sources(settings, None, wal=gap)).severity is Severity.P0
    url = pg18.new_database()
    slot = f"t_slot_{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
        conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n")  # some WAL
        try:
            config = ProtectionConfig(max_slot_retained_gb=0)
            retained = check_slot(Sources(settings, url), config)
            assert retained.severity is Severity.P1 and "retains" in retained.message
        finally:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
