"""Streaming into an S3 repository (a real SeaweedFS), through an outage of the S3 server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fixtures.s3 import start_s3_server
from fixtures.wal import WalEnv
from test_pitr import ids, restore, stop_restored


@pytest.mark.slow
def test_stream_to_s3_survives_an_outage_and_restores(walenv18: WalEnv, pgdr_home: Path) -> None:
    w = walenv18
    s3 = start_s3_server(pgdr_home)
    try:
        w.env |= s3.env() | {"PGDR_REPO": "s3://pgdr-wal/stream"}
        assert w.cli("repo", "init").code == 0
        stream = w.start_stream()
        w.wait_for(lambda: bool(w.sql("SELECT 1 FROM pg_stat_replication")), what="the streamer")
        assert w.cli("backup").code == 0
        w.insert(10)
        s3.stop()  # the repository is unreachable for a while
        w.pgbench(2)
        for _ in range(2):
            w.insert(1)
            w.sql("SELECT pg_switch_wal()")
        w.wait_for(lambda: "upload failed" in w.stream_log(), what="the outage", timeout=120)
        s3.start()
        w.insert(5)
        everything = ids(w.conninfo)
        since = time.time()

        def caught_up() -> bool:
            out = w.cli("wal", "status", "--json")
            if out.code not in (0, 1):
                return False
            report = json.loads(out.stdout)
            return bool(report["newest_wal_at"] and report["newest_wal_at"] > since)

        w.wait_for(caught_up, what="catching up with S3", timeout=180)
        w.stop_stream(stream)
        latest = restore(w, "--latest")
        assert ids(latest["url"]) == everything
        stop_restored(w, latest)
    finally:
        s3.stop()
