"""`pgdr prune` keeps exactly the WAL the kept backups need, on a real PostgreSQL 18."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import run_cli
from fixtures.wal import WalEnv
from pgdr.backup.repository import open_repository
from pgdr.config import PgdrSettings
from pgdr.core.errors import PgdrError
from pgdr.wal import retention
from pgdr.wal.retention import WalPruneReport
from test_bad_input import assert_one_sentence
from test_pitr import backup, ids, refused, restore, stop_restored, wait_streamed


@pytest.mark.slow
def test_prune_removes_wal_no_kept_backup_needs(walenv18: WalEnv) -> None:
    w = walenv18
    _window_0(w)
    stream = w.start_stream()
    w.insert(5)
    first = backup(w)
    assert w.cli("mark", "early").code == 0
    for _ in range(3):
        w.insert(1)
        w.sql("SELECT pg_switch_wal()")
    before_second = w.sql("SELECT clock_timestamp()")[0][0]
    second = backup(w)
    w.insert(5)
    wait_streamed(w)
    w.stop_stream(stream)
    everything = ids(w.conninfo)

    dry = json.loads(w.cli("prune", "--dry-run", "--json").stdout)
    assert dry["removed"] == [first]
    assert dry["wal"]["removed_count"] >= 3 and dry["wal"]["removed_marks"] == ["early"]
    status = json.loads(w.cli("wal", "status", "--json").stdout)
    stored_before = status["stored_bytes"]

    pruned = w.cli("prune", "--json")
    assert pruned.code == 0, pruned.stderr
    report = json.loads(pruned.stdout)["wal"]
    assert report["removed_count"] == dry["wal"]["removed_count"]
    status = json.loads(w.cli("wal", "status", "--json").stdout)
    assert status["gaps"] == [] and status["stored_bytes"] < stored_before
    kept_from = report["keep_from"]
    first_kept = min(t["first"] for t in status["timelines"] if t["first"])
    assert first_kept[8:] == kept_from[8:]

    # everything after the kept backup is still restorable; before it is outside the window
    latest = restore(w, "--latest")
    assert latest["backup_id"] == second
    assert ids(latest["url"]) == everything
    stop_restored(w, latest)
    assert "before the recovery window" in refused(w, "--target-time", before_second.isoformat())


def _window_0(w: WalEnv) -> None:
    config = w.repo.parent / "pgdr.toml"
    config.write_text(
        "[repositories.primary]\n"
        f'url = "{w.repo}"\n'
        "recovery_window_days = 0\ndaily_days = 0\nweekly_days = 0\n"
    )
    w.env["PGDR_CONFIG"] = str(config)


def _stored(w: WalEnv) -> set[str]:
    return {p.relative_to(w.repo).as_posix() for p in w.repo.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_prune_keeps_the_base_of_the_newest_timeline(walenv18: WalEnv) -> None:
    """After a point-in-time restore whose cluster streams into the same repository, the
    backups taken on the old timeline after the branch point cannot restore the new one.
    Prune removed the only backup that could (as outside every window) and the new
    timeline's WAL with it (exit 0): the live database's history was unrecoverable."""
    w = walenv18
    _window_0(w)
    stream = w.start_stream()
    w.insert(3)
    first = backup(w)
    w.insert(2)
    wait_streamed(w)
    branch = w.sql("SELECT clock_timestamp()")[0][0]
    w.insert(4)
    w.sql("SELECT pg_switch_wal()")
    second = backup(w)
    wait_streamed(w)
    w.stop_stream(stream)
    restored = restore(w, "--target-time", str(branch), "--accept-rollback")
    assert restored["backup_id"] == first and restored["timeline"] == 2
    w.env["DATABASE_URL"] = restored["url"]
    stream = w.start_stream()
    with psycopg.connect(restored["url"], autocommit=True) as conn:
        conn.execute(
            "INSERT INTO txlog (id, lsn) SELECT nextval('txlog_id'), pg_current_wal_lsn() "
            "FROM generate_series(1, 7)"
        )
        conn.execute("SELECT pg_switch_wal()")
    wait_streamed(w)
    w.stop_stream(stream)
    stop_restored(w, restored)

    pruned = w.cli("prune", "--json")
    assert pruned.code == 0, pruned.stdout + pruned.stderr
    report = json.loads(pruned.stdout)
    kept = {b["backup_id"]: b["reasons"] for b in report["backups"] if b["keep"]}
    assert kept[first] == ["base of timeline 2, whose WAL goes on"], kept
    assert second in kept  # the newest
    status = json.loads(w.cli("wal", "status", "--json").stdout)
    timeline_2 = [t for t in status["timelines"] if t["timeline"] == 2]
    assert timeline_2 and timeline_2[0]["first"] is not None, status["timelines"]
    assert status["gaps"] == []
    # and timeline 2 is restored from it: `--timeline 2` chose the newest backup (on timeline 1,
    # after the branch) and refused ("does not lead from the base backup"); `--latest` alone,
    # with two histories going on, is not guessed (it followed timeline 1 and was refused for
    # the "missing" WAL of timeline 2)
    w.env["DATABASE_URL"] = w.conninfo
    guessed = w.cli("restore", "--latest", "--new-cluster")
    assert guessed.code == 1 and "--timeline N" in assert_one_sentence(guessed.stderr)
    latest = restore(w, "--latest", "--timeline", "2")
    assert latest["backup_id"] == first and latest["timeline"] >= 3, latest
    assert len(ids(latest["url"])) == 5 + 7
    stop_restored(w, latest)


@pytest.mark.slow
def test_prune_removes_no_wal_while_a_manifest_cannot_be_read(walenv18: WalEnv) -> None:
    """A backup whose manifest failed authentication was "left alone", and the WAL it needs
    was removed as needed by no kept backup (exit 0): where its WAL starts is unknown."""
    w = walenv18
    _window_0(w)
    stream = w.start_stream()
    w.insert(3)
    first = backup(w)
    for _ in range(3):
        w.insert(1)
        w.sql("SELECT pg_switch_wal()")
    second = backup(w)
    wait_streamed(w)
    w.stop_stream(stream)
    manifest = w.repo / "backups" / first / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"keep": false', '"keep": true'))
    before = _stored(w)

    pruned = w.cli("prune", "--json")
    assert pruned.code == 3, pruned.stdout + pruned.stderr
    assert first in assert_one_sentence(pruned.stderr) and "left alone" in pruned.stderr
    report = json.loads(pruned.stdout)
    assert report["invalid"] == [first] and report["removed"] == []
    assert report["wal"]["removed_count"] == 0 and "no WAL was removed" in report["wal"]["skipped"]
    assert _stored(w) == before
    assert second in {b["backup_id"] for b in report["backups"] if b["keep"]}


def test_prune_holds_the_lock_while_it_removes_wal(
    walenv18: WalEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WAL half ran after the backups' lock was released: a `repo copy` into the
    repository meanwhile had its WAL removed under it."""
    w = walenv18
    stream = w.start_stream()
    w.insert(2)
    backup(w)
    wait_streamed(w)
    w.stop_stream(stream)
    for name, value in w.env.items():
        if name.startswith("PGDR_"):
            monkeypatch.setenv(name, value)
    repo = open_repository(PgdrSettings())
    seen: list[str] = []
    real = retention.prune_wal

    def watching(*args: Any, **kwargs: Any) -> WalPruneReport:
        try:
            with repo.locked("a copy"):
                seen.append("free")
        except PgdrError as exc:
            seen.append(exc.message)
        return real(*args, **kwargs)

    monkeypatch.setattr(retention, "prune_wal", watching)
    retention.prune_repository(repo)
    assert len(seen) == 1 and "prune" in seen[0], seen


def test_prune_refuses_a_repository_that_does_not_exist(cli_env: dict[str, str]) -> None:
    """A mistyped repository path "pruned" an empty new repository: exit 0, "Freed 0 B",
    and a lock file made there."""
    missing = Path(cli_env["PGDR_HOME"]) / "typo"
    env = cli_env | {"PGDR_REPO": str(missing)}
    for args in (("prune",), ("prune", "--dry-run"), ("dump", "prune")):
        result = run_cli(*args, env=env)
        assert result.code == 2, (args, result.stdout, result.stderr)
        assert "There is no repository" in assert_one_sentence(result.stderr)
        assert not missing.exists()
