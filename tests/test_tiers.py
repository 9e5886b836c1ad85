"""Tiers: a secondary repository on S3 (SeaweedFS) that receives copies is a PITR tier.

`repo copy` carries the WAL the copied backups need and all WAL since; `wal status` of each
repository reports the window that repository alone can restore.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.s3 import S3Server
from fixtures.wal import WalEnv
from pgdr.crypto.keys import generate_key_text
from test_pitr import backup, committed_by, ids, stop_restored, wait_streamed


@pytest.mark.slow
def test_secondary_tier_restores_to_a_point_in_time(
    walenv18: WalEnv, s3_server: S3Server, tmp_path: Path
) -> None:
    w = walenv18
    toml = tmp_path / "pgdr.toml"
    toml.write_text(
        f"""
[repositories.primary]
url = "{w.repo}"

[repositories.secondary]
url = "s3://pgdr-tiers/{tmp_path.name}"
recovery_window_days = 0
daily_days = 0
weekly_days = 90
keep_days = 90

[repositories.tertiary]
url = "{tmp_path / "tertiary"}"
"""
    )
    w.env.pop("PGDR_REPO")
    w.env |= s3_server.env() | {
        "PGDR_CONFIG": str(toml),
        "PGDR_ENCRYPTION_KEY": generate_key_text(),
    }
    stream = w.start_stream()
    w.insert(20)
    backup(w)
    w.insert(5)
    assert w.cli("repo", "init", "secondary").code == 0
    first = w.cli("repo", "copy", "primary", "secondary", "--latest", "--json")
    assert first.code == 0, first.stderr
    assert json.loads(first.stdout)["wal"]["files_copied"] > 0
    w.insert(10)
    moment = w.sql("SELECT clock_timestamp()")[0][0]
    w.insert(5)
    wait_streamed(w)
    again = w.cli("repo", "copy", "primary", "secondary", "--latest", "--json")
    assert again.code == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["copied"] == [] and report["wal"]["files_copied"] > 0

    status = w.cli("wal", "status", "--repo", "secondary", "--json")
    assert status.code == 0, status.stderr
    state = json.loads(status.stdout)
    assert state["window_start"] is not None and state["backups_without_wal"] == []
    assert state["streamer"] is None  # the secondary has no streamer of its own

    restored = w.cli(
        "restore",
        "--repo",
        "secondary",
        "--target-time",
        moment.isoformat(),
        "--new-cluster",
        "--json",
    )
    assert restored.code == 0, restored.stdout + restored.stderr
    data = json.loads(restored.stdout)
    assert ids(data["url"]) == committed_by(w, moment)
    assert len(committed_by(w, moment)) == 35
    stop_restored(w, data)
    w.stop_stream(stream)

    # A tier missing the WAL its backup needs has no window, and says which backup lacks it.
    assert w.cli("repo", "copy", "primary", "tertiary", "--latest").code == 0
    wal_dir = tmp_path / "tertiary" / "wal"
    first_segment = sorted(p for p in wal_dir.glob("0000000*/*") if len(p.name) == 24)[0]
    first_segment.unlink()
    holed = w.cli("wal", "status", "--repo", "tertiary", "--json")
    assert holed.code == 0, holed.stderr
    truth = json.loads(holed.stdout)
    assert truth["window_start"] is None and truth["window_end"] is None
    assert truth["backups_without_wal"] and first_segment.name in truth["backups_without_wal"][0]
    human = w.cli("wal", "status", "--repo", "tertiary")
    assert "no backup has all the WAL it needs" in " ".join(human.stdout.split())
