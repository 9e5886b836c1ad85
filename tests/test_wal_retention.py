"""`pgdr prune` keeps exactly the WAL the kept backups need, on a real PostgreSQL 18."""

from __future__ import annotations

import json

import pytest

from fixtures.wal import WalEnv
from test_pitr import backup, ids, refused, restore, stop_restored, wait_streamed


@pytest.mark.slow
def test_prune_removes_wal_no_kept_backup_needs(walenv18: WalEnv) -> None:
    w = walenv18
    config = w.repo.parent / "pgdr.toml"
    config.write_text(
        "[repositories.primary]\n"
        f'url = "{w.repo}"\n'
        "recovery_window_days = 0\ndaily_days = 0\nweekly_days = 0\n"
    )
    w.env["PGDR_CONFIG"] = str(config)
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
