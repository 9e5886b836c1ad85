"""The protection checks after real history: an old backup, a failed one, a restore test that
failed on a damaged copy or passed too long ago, a quarterly drill long past.

One small cluster of its own and one real backup (taken once per module) feed every test; each
test works on a copy of that repository. Small limits from ``[monitor]`` in pgdr.toml stand in
for the passing of days; the records themselves come from real runs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fixtures.agent import new_cluster
from pgdr.backup import Manifest, Repository, repository_at
from pgdr.backup.take import take_backup
from pgdr.cluster import LocalCluster, find_free_port
from pgdr.config import PgdrSettings
from pgdr.config.fleet import parse_fleet
from pgdr.core.errors import PgdrError
from pgdr.core.incidents import runbook_action
from pgdr.core.severity import Severity
from pgdr.crypto import MasterKey
from pgdr.crypto.keys import decode_key, generate_key_text
from pgdr.drills.report import QUARTER_MONTHS, add_months
from pgdr.drills.watch import check_drill_overdue
from pgdr.incident.store import IncidentLog
from pgdr.monitoring.checks import CheckResult
from pgdr.restore.tested import restore_test
from pgdr.watch import backup_period, watch_checks
from pgdr.watch.build import protection_config

KEY = MasterKey(decode_key(generate_key_text(), "test"), "test")


@pytest.fixture(scope="module")
def small(settings: PgdrSettings) -> Iterator[LocalCluster]:
    """A fresh cluster of its own: its backup (and restore test) stay small and quick."""
    cluster = new_cluster(settings, "protection-history")
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="module")
def pristine(small: LocalCluster, settings: PgdrSettings, pgdr_home: Path) -> tuple[Path, Manifest]:
    """One repository holding one real backup and one passing restore test of it."""
    path = pgdr_home / "protection-history-repo"
    repo = repository_at(str(path), settings)
    repo.use_master_key(KEY)
    manifest = take_backup(repo, small.conninfo())
    assert restore_test(repo, manifest.id)["passed"]
    return path, manifest


def _copy(pristine: tuple[Path, Manifest], tmp_path: Path, settings: PgdrSettings) -> Repository:
    repo_path = tmp_path / "repo"
    shutil.copytree(pristine[0], repo_path)
    repo = repository_at(str(repo_path), settings)
    repo.use_master_key(KEY)
    return repo


def _round(home: Path, repo: Repository, monitor: str = "") -> dict[str, CheckResult]:
    """One round of the watch checks with ``[monitor]`` limits from ``home``'s pgdr.toml."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "pgdr.toml").write_text(f"[monitor]\n{monitor}")
    checks = watch_checks(
        PgdrSettings(home=home), None, records=home / "records", opener=lambda: repo
    )
    return {r.name: r for r in (c() for c in checks)}


def _incident_action(home: Path, result: CheckResult) -> str:
    """The incident a failing result opens, with its runbook action."""
    log = IncidentLog(home / "records" / "incidents")
    (incident,) = [i for i in log.update([result]) if i.check == result.name]
    assert result.severity is not None and incident.severity == result.severity.value
    assert incident.message == result.message
    return str(incident.as_dict()["action"])


def test_a_backup_older_than_allowed_is_p1(
    pristine: tuple[Path, Manifest], tmp_path: Path, settings: PgdrSettings
) -> None:
    repo = _copy(pristine, tmp_path, settings)
    manifest = pristine[1]
    fresh = _round(tmp_path / "default", repo)["backup_age"]  # the default: 26 h
    assert fresh.ok and fresh.message.startswith(f"newest backup {manifest.id} is ")
    old = _round(tmp_path / "strict", repo, "max_backup_age_hours = 0.0001\n")["backup_age"]
    assert not old.ok and old.severity is Severity.P1
    assert old.message.startswith(f"newest backup {manifest.id} is ")
    assert old.message.endswith(" old (allowed 0.0001 h)")
    assert old.details[0]["size_bytes"] == manifest.stored_size
    action = _incident_action(tmp_path / "strict", old)
    assert action == runbook_action("backup_age") and "pgdr backup" in action


def test_the_backup_age_limit_follows_the_schedule(
    pristine: tuple[Path, Manifest], tmp_path: Path, settings: PgdrSettings
) -> None:
    fleet = parse_fleet(
        {"databases": {"shop": {"url_env": "X", "schedule": {"full": "1d", "incremental": "6h"}}}}
    )
    assert backup_period(fleet["shop"]) == 6 * 3600
    home = tmp_path / "home"
    home.mkdir()
    (home / "pgdr.toml").write_text("[monitor]\n")
    assert protection_config(PgdrSettings(home=home), 6 * 3600).max_backup_age_hours == 8
    assert protection_config(PgdrSettings(home=home), 60).max_backup_age_hours == 90 / 3600
    assert protection_config(PgdrSettings(home=home)).max_backup_age_hours == 26  # no schedule
    repo = _copy(pristine, tmp_path, settings)
    checks = watch_checks(
        PgdrSettings(home=home), None, opener=lambda: repo, backup_period_s=0.2
    )  # a backup every 0.2 s: the one taken before the module's restore test is overdue
    result = checks[0]()
    assert result.name == "backup_age" and result.severity is Severity.P1
    assert result.message.endswith(f" old (allowed {0.3 / 3600:g} h)")
    (home / "pgdr.toml").write_text("[monitor]\nmax_backup_age_hours = 26\n")  # explicit wins
    assert protection_config(PgdrSettings(home=home), 0.2).max_backup_age_hours == 26


def test_a_backup_that_failed_after_a_good_one_is_p1(
    pristine: tuple[Path, Manifest], tmp_path: Path, settings: PgdrSettings
) -> None:
    repo = _copy(pristine, tmp_path, settings)
    assert _round(tmp_path / "before", repo)["backup_failed"].ok
    down = f"postgresql://postgres@127.0.0.1:{find_free_port()}/postgres"  # nobody listens
    with pytest.raises(PgdrError) as raised:
        take_backup(repo, down)
    (record,) = repo.backup_failures()
    assert record["error"] == raised.value.message
    result = _round(tmp_path / "after", repo)["backup_failed"]
    assert not result.ok and result.severity is Severity.P1
    assert result.message == f"the last backup failed: {raised.value.message}"
    assert "Read the failure" in _incident_action(tmp_path / "after", result)
    assert _round(tmp_path / "after", repo)["backup_age"].ok  # the good backup still counts


def test_a_restore_test_of_a_damaged_copy_fails_p1(
    pristine: tuple[Path, Manifest], tmp_path: Path, settings: PgdrSettings
) -> None:
    repo = _copy(pristine, tmp_path, settings)
    manifest = pristine[1]
    (tmp_path / "repo" / manifest.chunk_key(0)).unlink()  # a chunk lost from the copy
    tested = restore_test(repo, manifest.id)
    assert not tested["passed"]
    result = _round(tmp_path / "home", repo)["restore_test"]
    assert not result.ok and result.severity is Severity.P1
    assert result.message == f"the last restore test failed: {tested['detail']}"
    assert "Chunk 1 of backup" in result.message
    assert result.details[0]["rto_seconds"] is not None  # the earlier passing test's duration
    action = _incident_action(tmp_path / "home", result)
    assert "pgdr backup verify --restore-test" in action


def test_a_passing_restore_test_too_long_ago_is_p1(
    pristine: tuple[Path, Manifest], tmp_path: Path, settings: PgdrSettings
) -> None:
    repo = _copy(pristine, tmp_path, settings)
    fresh = _round(tmp_path / "default", repo)["restore_test"]  # the default: 7 days
    assert fresh.ok and fresh.message.startswith("passed ")
    old = _round(tmp_path / "strict", repo, "max_restore_test_age_days = 0.000001\n")
    result = old["restore_test"]
    assert not result.ok and result.severity is Severity.P1
    assert result.message.startswith("the last restore test is ")
    assert result.message.endswith(" old (allowed 1e-06 days)")


def test_a_quarterly_drill_long_past_is_p2(tmp_path: Path) -> None:
    """The drill records of a full run (`pgdr drill run all`) four months ago. A real run cannot
    be dated back, so these three records are written as the drill runner writes them."""
    directory = tmp_path / "records" / "drills"
    directory.mkdir(parents=True)
    began = datetime.now(UTC) - timedelta(days=125)
    for n, scenario in enumerate(("pitr", "restore", "failover")):
        start = began + timedelta(minutes=n)
        record = {
            "kind": "drill",
            "id": start.strftime("%Y%m%dT%H%M%S%fZ"),
            "run_id": "run-1",
            "scenario": scenario,
            "passed": True,
            "started_at": start.isoformat(),
            "finished_at": (start + timedelta(seconds=30)).isoformat(),
            "rto": {"seconds": 30.0},
            "rpo": {"seconds": 0.5},
        }
        (directory / f"{record['id']}.json").write_text(json.dumps(record))
    result = check_drill_overdue(tmp_path)
    assert not result.ok and result.severity is Severity.P2
    due = add_months(began, QUARTER_MONTHS).date()
    assert result.message == f"The quarterly drill was due on {due}: run `pgdr drill run all`."
    assert result.details[0] == {"rto_seconds": 30.0, "rpo_seconds": 0.5}
    assert "pgdr drill run all" in runbook_action("drill_overdue")
