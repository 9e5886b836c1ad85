"""Retention policies (the runbook's windows), prune, repository configuration and copies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import Server, run_cli
from pgdr.backup import (
    Manifest,
    RetentionPolicy,
    load_repositories,
)
from pgdr.backup.manifest import format_time
from pgdr.backup.retention import plan_retention
from pgdr.config import PgdrSettings
from pgdr.core.errors import ConfigError
from pgdr.crypto.keys import generate_key_text
from test_bad_input import assert_one_sentence

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _m(age_days: float, parent: str | None = None, keep: bool = False) -> Manifest:
    stop = NOW - timedelta(days=age_days)
    return Manifest(
        id=stop.strftime("%Y%m%dT%H%M%SZ") + ("-incr" if parent else "-full"),
        kind="incremental" if parent else "full",
        parent=parent,
        label=None,
        keep=keep,
        pg_version="18.1",
        pg_major=18,
        system_identifier="1",
        timeline=1,
        start_lsn="0/1",
        stop_lsn="0/2",
        start_time=format_time(stop),
        stop_time=format_time(stop),
        chunk_size=1,
        stream_size=1,
        stored_size=100,
        compression="zstd-3",
        encryption="aes-256-gcm",
        host="h",
        pgdr_version="0",
    )


def _kept(backups: list[Manifest], policy: RetentionPolicy) -> set[str]:
    return {d.backup_id for d in plan_retention(backups, policy, NOW) if d.keep}


def test_recovery_window_keeps_the_base_before_it() -> None:
    backups = [_m(d) for d in (20, 10, 8, 6, 3, 1)]
    kept = _kept(backups, RetentionPolicy(recovery_window_days=7, daily_days=0))
    assert kept == {backups[2].id, backups[3].id, backups[4].id, backups[5].id}


def test_daily_and_weekly_snapshots() -> None:
    # two backups a day for 40 days
    backups = [_m(d / 2 + 0.01) for d in range(80)]
    daily = _kept(backups, RetentionPolicy(recovery_window_days=0, daily_days=30))
    days = {m.stop_time[:10] for m in backups if m.id in daily}
    assert len(daily) == len(days) and 29 <= len(daily) <= 31
    weekly = _kept(backups, RetentionPolicy(recovery_window_days=0, daily_days=0, weekly_days=90))
    assert 6 <= len(weekly) <= 7  # one per ISO week, 40 days of backups
    nothing = _kept(backups, RetentionPolicy(0, 0, 0))
    assert nothing == {backups[0].id}  # the newest backup is never removed


def test_keep_label_and_incremental_parents() -> None:
    old_full = _m(100)
    old_incr = _m(99, parent=old_full.id, keep=True)
    recent = _m(1)
    lonely = _m(50)
    decisions = plan_retention([old_full, old_incr, lonely, recent], RetentionPolicy(7, 30, 0), NOW)
    by_id = {d.backup_id: d for d in decisions}
    assert by_id[old_incr.id].keep and "kept (--keep)" in by_id[old_incr.id].reasons
    assert by_id[old_full.id].keep and f"parent of {old_incr.id}" in by_id[old_full.id].reasons
    assert by_id[lonely.id].keep  # the base for the start of the 7-day window
    assert by_id[recent.id].keep


def test_secondary_tier_ages_out_keep_backups() -> None:
    """The runbook's secondary: 90 days, weekly plus before major changes; nothing forever."""
    secondary = RetentionPolicy(recovery_window_days=0, daily_days=0, weekly_days=90, keep_days=90)
    before_change_old = _m(120, keep=True)
    before_change_recent = _m(40, keep=True)
    weekly_old = _m(100)
    weekly = [_m(d) for d in (60, 30, 2)]
    backups = [before_change_old, weekly_old, before_change_recent, *weekly]
    kept = _kept(backups, secondary)
    assert before_change_old.id not in kept and weekly_old.id not in kept
    assert {before_change_recent.id, *(m.id for m in weekly)} <= kept
    forever = _kept(backups, RetentionPolicy(0, 0, 90))  # keep_days = 0: --keep never expires
    assert before_change_old.id in forever


def test_repository_configuration(tmp_path: Path) -> None:
    settings = PgdrSettings(home=tmp_path)
    default = load_repositories(settings, {})
    assert default["primary"].url == str(tmp_path / "repository")
    toml = {
        "repositories": {
            "primary": {"url": "/srv/pgdr", "recovery_window_days": 7, "daily_days": 30},
            "secondary": {
                "url": "s3://bucket/prefix",
                "endpoint": "http://127.0.0.1:9000",
                "recovery_window_days": 0,
                "daily_days": 0,
                "weekly_days": 90,
            },
        }
    }
    repos = load_repositories(settings, toml)
    assert repos["secondary"].retention == RetentionPolicy(0, 0, 90)
    assert repos["primary"].url == "/srv/pgdr"
    overridden = load_repositories(PgdrSettings(home=tmp_path, repo="/elsewhere"), toml)
    assert overridden["primary"].url == "/elsewhere"
    assert overridden["primary"].retention == RetentionPolicy(7, 30, 0)
    with pytest.raises(ConfigError, match="whole number of days"):
        load_repositories(settings, {"repositories": {"x": {"url": "/a", "daily_days": -1}}})
    with pytest.raises(ConfigError, match="unknown keys: secret_access_key"):
        load_repositories(
            settings, {"repositories": {"x": {"url": "/a", "secret_access_key": "oops"}}}
        )


def test_repo_init_info_prune_and_copy(
    pg15: Server, backup_env: dict[str, str], scratch: Path
) -> None:
    toml = scratch / "pgdr.toml"
    toml.write_text(
        f"""
[repositories.primary]
url = "{scratch / "primary"}"
recovery_window_days = 0
daily_days = 0

[repositories.secondary]
url = "{scratch / "secondary"}"
weekly_days = 90
"""
    )
    env = {k: v for k, v in backup_env.items() if k != "PGDR_REPO"}
    env |= {"PGDR_CONFIG": str(toml), "DATABASE_URL": pg15.cluster.conninfo()}
    init = run_cli("repo", "init", "secondary", env=env)
    assert init.code == 0 and "Created repository secondary" in init.stdout
    assert "Already initialised" in run_cli("repo", "init", "secondary", env=env).stdout

    first = json.loads(
        run_cli("backup", "--keep", "--label", "pre-change", "--json", env=env).stdout
    )
    second = json.loads(run_cli("backup", "--json", env=env).stdout)
    third = json.loads(run_cli("backup", "--json", env=env).stdout)

    info = json.loads(run_cli("repo", "info", "--json", env=env).stdout)
    assert info["backups"] == 3 and info["newest"] == third["id"]
    assert info["system_identifier"] == first["system_identifier"]
    listed = json.loads(run_cli("repo", "list", "--json", env=env).stdout)
    assert set(listed) == {"primary", "secondary"}

    dry = run_cli("prune", "--dry-run", "--json", env=env)
    plan = json.loads(dry.stdout)
    assert plan["removed"] == [second["id"]]
    assert len(json.loads(run_cli("backup", "list", "--json", env=env).stdout)["backups"]) == 3
    human = run_cli("prune", "--dry-run", env=env)
    assert "would remove" in human.stdout and "kept (--keep)" in human.stdout

    applied = json.loads(run_cli("prune", "--json", env=env).stdout)
    assert applied["removed"] == [second["id"]]
    remaining = json.loads(run_cli("backup", "list", "--json", env=env).stdout)["backups"]
    assert [b["id"] for b in remaining] == [first["id"], third["id"]]

    copied = run_cli("repo", "copy", "primary", "secondary", first["id"], "--json", env=env)
    assert copied.code == 0, copied.stderr
    assert json.loads(copied.stdout)["copied"] == [first["id"]]
    latest = run_cli("repo", "copy", "primary", "secondary", "--latest", env=env)
    assert latest.code == 0 and "every chunk verified" in latest.stdout
    again = run_cli("repo", "copy", "primary", "secondary", "--latest", env=env)
    assert "Already in secondary" in again.stdout
    verify = run_cli("backup", "verify", "--all", "--repo", "secondary", env=env)
    assert verify.code == 0, verify.stdout + verify.stderr
    restored = run_cli(
        "restore", first["id"], "--repo", "secondary", "--to", str(scratch / "r"), env=env
    )
    assert restored.code == 0, restored.stderr
    assert (scratch / "r" / "PG_VERSION").read_text().strip() == "15"


def test_prune_with_another_key_removes_nothing(pg15: Server, backup_env: dict[str, str]) -> None:
    """With a key that opens none of the manifests, prune left every backup alone "as
    damaged" and exited 0 (`dump prune` the same, without even naming them). Another key is
    not damage: it stops first, as `backup list` does, with nothing removed."""
    env = backup_env | {"DATABASE_URL": pg15.cluster.conninfo()}
    for _ in range(2):
        assert run_cli("backup", env=env).code == 0
    assert run_cli("dump", env=env).code == 0
    repo = Path(env["PGDR_REPO"])
    before = sorted(p for p in repo.rglob("*") if p.is_file() and p.name != ".pgdr-lock")
    other = env | {"PGDR_ENCRYPTION_KEY": generate_key_text()}
    for args in (("prune",), ("prune", "--dry-run"), ("dump", "prune")):
        result = run_cli(*args, env=other)
        assert result.code == 2, (args, result.stdout, result.stderr)
        assert "use the key that sealed them" in assert_one_sentence(result.stderr)
    after = sorted(p for p in repo.rglob("*") if p.is_file() and p.name != ".pgdr-lock")
    assert after == before


def test_retention_beyond_a_century_is_a_typo() -> None:
    """A window of a billion days crashed prune with a traceback (OverflowError, exit 1)."""
    settings = PgdrSettings(home=Path("/nonexistent"))
    for value in (36_501, 1_000_000_000):
        table = {"repositories": {"x": {"url": "/a", "recovery_window_days": value}}}
        with pytest.raises(ConfigError, match="from 0 to 36,500"):
            load_repositories(settings, table)
    table = {"repositories": {"x": {"url": "/a", "keep_days": 36_500}}}
    assert load_repositories(settings, table)["x"].retention.keep_days == 36_500
