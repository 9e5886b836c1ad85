"""`pgdr wal stream` against real PostgreSQL 18 and 15: segments, partials, restarts, outages."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli
from fixtures.wal import WalEnv
from pgdr.crypto import load_master_key
from pgdr.storage import LocalStore
from pgdr.wal import WalArchive
from pgdr.wal.names import is_segment


def archive_of(w: WalEnv) -> WalArchive:
    key, _ = load_master_key(Path(w.env["PGDR_HOME"]))
    return WalArchive.open(LocalStore(w.repo), key)


def segments(w: WalEnv) -> set[str]:
    if not (w.repo / "wal" / "keyring.json").exists():
        return set()
    return {n for n, _ in archive_of(w).names() if is_segment(n)}


def current_segment(w: WalEnv) -> str:
    return str(w.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0])


def switch(w: WalEnv) -> str:
    """Close the current segment; returns its name."""
    name = current_segment(w)
    w.sql("SELECT pg_switch_wal()")
    return name


def test_stream_uploads_segments_and_partial(walenv: WalEnv) -> None:
    w = walenv
    proc = w.start_stream()
    w.wait_for(
        lambda: bool(w.sql("SELECT 1 FROM pg_stat_replication WHERE application_name='pgdr'")),
        what="the streamer to connect",
    )
    w.insert(20)
    closed = switch(w)
    w.insert(5)
    w.wait_for(lambda: closed in segments(w), what=f"{closed} in the repository")
    archive = archive_of(w)
    # the segment is stored sealed and comes back byte for byte as PostgreSQL wrote it
    data = archive.get(closed)
    assert len(data) == archive.segment_size
    assert b"txlog" not in (w.repo / "wal" / closed[:8] / closed).read_bytes()
    # the segment being written is kept as a partial
    current = current_segment(w)
    w.wait_for(lambda: archive.exists(current + ".partial"), what="the partial segment")
    assert w.sql("SELECT slot_name FROM pg_replication_slots") == [("pgdr",)]

    def reported() -> bool:
        status = run_cli("wal", "status", "--json", env=w.env)
        assert status.code == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["gaps"] == []
        streamer = report["streamer"]
        return bool(
            report["streamer_alive"]
            and streamer["state"] == "streaming"
            and streamer["lag_bytes"] is not None
        )

    w.wait_for(reported, what="the streamer to report its lag")
    w.stop_stream(proc)
    assert proc.returncode == 0
    report = json.loads(run_cli("wal", "status", "--json", env=w.env).stdout)
    assert report["streamer"]["state"] == "stopped"
