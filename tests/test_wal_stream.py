"""`pgdr wal stream` against real PostgreSQL 18 and 15: segments, partials, restarts, outages."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import time
from pathlib import Path

import psycopg

from conftest import run_cli
from fixtures.wal import WalEnv, make_wal_env
from pgdr.config import PgdrSettings
from pgdr.crypto import load_master_key
from pgdr.crypto.keys import MasterKey
from pgdr.restore.start import adopt_restored
from pgdr.storage import LocalStore
from pgdr.wal import WalArchive
from pgdr.wal.names import is_segment
from pgdr.wal.stream_state import StreamState
from pgdr.wal.uploader import HEARTBEAT_S, SpoolUploader

SEGMENT = 16 * 2**20


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
    """Write something and close the current segment; returns its name."""
    w.insert(1)
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
    w.wait_for(lambda: archive.has_partial(current), what="the partial segment")
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


def streaming(w: WalEnv) -> bool:
    return bool(w.sql("SELECT 1 FROM pg_stat_replication WHERE application_name = 'pgdr'"))


def restored_ids(w: WalEnv, scratch: Path) -> set[int]:
    """`pgdr restore --latest --to DIR`, then start the result and read its rows."""
    target = scratch / "restored"
    result = w.cli("restore", "--latest", "--to", str(target), "--json")
    assert result.code == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["running"] is False and (target / "PG_VERSION").is_file()
    assert not (target / "recovery.signal").exists()
    # --to DIR leaves a plain data directory (no pgdr cluster around it): adopt it to read it
    assert data["cluster_dir"] is None
    cluster = adopt_restored(w.cluster.settings, target, 18, scratch / "adopted")
    cluster.start()
    try:
        rows = psycopg.connect(cluster.conninfo(), autocommit=True).execute("SELECT id FROM txlog")
        return {int(r[0]) for r in rows.fetchall()}
    finally:
        cluster.stop()


def test_streamer_killed_and_server_crash_lose_nothing(walenv18: WalEnv, scratch: Path) -> None:
    w = walenv18
    proc = w.start_stream()
    w.wait_for(lambda: streaming(w), what="the streamer to connect")
    assert w.cli("backup").code == 0
    first = switch(w)
    w.wait_for(lambda: first in segments(w), what=first)
    # kill -9 the streamer: its pg_receivewal dies with it, the slot keeps the WAL
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    w.wait_for(lambda: not streaming(w), what="pg_receivewal to die with its parent")
    w.pgbench(1)
    while_down = [switch(w) for _ in range(3)]
    proc = w.start_stream()
    w.wait_for(lambda: set(while_down) <= segments(w), what="catching up after kill -9")
    # crash the server mid-stream: the streamer waits, reconnects and goes on
    w.pgbench(1)
    w.cluster.kill()
    time.sleep(1)
    w.cluster.start()
    w.wait_for(lambda: streaming(w), what="reconnecting after the crash")
    after_crash = switch(w)
    w.insert(5)
    w.wait_for(lambda: after_crash in segments(w), what=after_crash)
    assert proc.poll() is None
    assert "restarting" in w.stream_log()
    report = json.loads(run_cli("wal", "status", "--json", env=w.env).stdout)
    assert report["gaps"] == []
    everything = {int(r[0]) for r in w.sql("SELECT id FROM txlog")}
    time.sleep(1)  # the last partial upload
    w.stop_stream(proc)
    # nothing committed was lost across the kill, the outage of the streamer and the crash
    assert restored_ids(w, scratch) == everything


def test_repository_outage_is_caught_up(walenv18: WalEnv, scratch: Path) -> None:
    w = walenv18
    proc = w.start_stream()
    w.wait_for(lambda: streaming(w), what="the streamer to connect")
    assert w.cli("backup").code == 0
    first = switch(w)
    w.wait_for(lambda: first in segments(w), what=first)
    # the repository disappears (a file where its directory was: every write fails)
    aside = w.repo.with_name("repo-away")
    w.repo.rename(aside)
    w.repo.write_text("unreachable")
    w.pgbench(1)
    during = [switch(w) for _ in range(3)]
    w.wait_for(lambda: "upload failed" in w.stream_log(), what="the outage to be noticed")
    w.repo.unlink()
    aside.rename(w.repo)
    w.wait_for(lambda: set(during) <= segments(w), what="catching up after the outage")
    assert proc.poll() is None
    w.insert(3)
    everything = {int(r[0]) for r in w.sql("SELECT id FROM txlog")}
    time.sleep(1)
    w.stop_stream(proc)
    assert restored_ids(w, scratch) == everything


def test_push_and_fetch_as_archive_commands(walenv18: WalEnv, tmp_path: Path) -> None:
    w = walenv18
    w.insert(3)
    name = switch(w)
    source = w.cluster.data_dir / "pg_wal" / name
    pushed = run_cli("wal", "push", str(source), "--json", env=w.env)
    assert pushed.code == 0, pushed.stderr
    assert json.loads(pushed.stdout)["stored"] is True
    # the same segment twice is fine
    again = run_cli("wal", "push", str(source), "--json", env=w.env)
    assert again.code == 0 and json.loads(again.stdout)["stored"] is False
    # a different file under the same name is refused
    forged = tmp_path / name
    data = bytearray(source.read_bytes())
    data[-1] ^= 0xFF
    forged.write_bytes(bytes(data))
    refused = run_cli("wal", "push", str(forged), env=w.env)
    assert refused.code == 3 and "already holds a different" in refused.stderr
    # fetch gives back the original; an absent file is exit 1 (PostgreSQL's "not there")
    out = tmp_path / "restored" / "RECOVERYXLOG"
    fetched = run_cli("wal", "fetch", name, str(out), env=w.env)
    assert fetched.code == 0, fetched.stderr
    assert out.read_bytes() == source.read_bytes()
    missing = run_cli("wal", "fetch", "00000009.history", str(out), env=w.env)
    assert missing.code == 1 and "not in the repository" in missing.stderr
    # a damaged object is named, not replayed
    stored = w.repo / "wal" / name[:8] / name
    blob = bytearray(stored.read_bytes())
    blob[100] ^= 0x01
    stored.write_bytes(bytes(blob))
    damaged = run_cli("wal", "fetch", name, str(out), env=w.env)
    assert damaged.code == 3 and name in damaged.stderr and "damaged" in damaged.stderr


def test_push_refuses_wal_of_another_cluster(walenv18: WalEnv, settings: PgdrSettings) -> None:
    w = walenv18
    name = switch(w)
    assert run_cli("wal", "push", str(w.cluster.data_dir / "pg_wal" / name), env=w.env).code == 0
    other = make_wal_env(settings, w.repo.parent / "other", 18)
    try:
        other_name = str(other.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0])
        other.sql("SELECT pg_switch_wal()")
        result = run_cli(
            "wal", "push", str(other.cluster.data_dir / "pg_wal" / other_name), env=w.env
        )
        assert result.code == 2 and "database system" in result.stderr
    finally:
        other.cluster.destroy()


def test_setup_prints_and_applies_stream_settings(walenv: WalEnv) -> None:
    w = walenv
    printed = run_cli("wal", "setup", "--json", env=w.env)
    assert printed.code == 0, printed.stderr
    plan = json.loads(printed.stdout)
    assert plan["slot_exists"] is False
    names = {c["name"] for c in plan["changes"]}
    assert "wal_level" in names
    assert ("summarize_wal" in names) == (w.cluster.installation.major >= 17)
    applied = json.loads(run_cli("wal", "setup", "--apply", "--json", env=w.env).stdout)
    assert applied["applied"] and applied["slot_exists"]
    assert w.sql("SELECT slot_name FROM pg_replication_slots") == [("pgdr",)]
    if w.cluster.installation.major >= 17:
        assert w.sql("SHOW summarize_wal") == [("on",)]


def test_setup_archive_refuses_when_server_user_cannot_run_pgdr(walenv18: WalEnv) -> None:
    if os.geteuid() != 0:
        return
    w = walenv18
    result = run_cli("wal", "setup", "--mode", "archive", "--apply", env=w.env)
    # this venv's interpreter lives under /root, where the service user cannot go
    assert result.code == 2, result.stdout + result.stderr
    message = " ".join(result.stderr.split())
    assert "cannot run" in message and "archive_command runs as that user" in message
    assert "archive_command" not in (w.cluster.data_dir / "postgresql.auto.conf").read_text()


def test_a_write_that_left_the_mtime_unchanged_is_uploaded(
    walenv18: WalEnv, tmp_path: Path
) -> None:
    """On kernels with coarse file timestamps (before Linux 6.13), pg_receivewal's write in the
    same clock tick as the uploader's last read leaves the partial file's size and mtime as
    they were. The uploader took that for "nothing new" and, every heartbeat, recorded that the
    repository held everything received until now, while those bytes stayed in the spool. The
    coarse tick is reproduced by putting the file's mtime back after the write; the WAL is the
    server's own, written into the spool in two steps as pg_receivewal would."""
    w = walenv18
    w.insert(50)
    sysid = int(str(w.sql("SELECT system_identifier FROM pg_control_system()")[0][0]))
    name, offset = w.sql("SELECT * FROM pg_walfile_name_offset(pg_current_wal_lsn())")[0]
    wal = (w.cluster.data_dir / "pg_wal" / str(name)).read_bytes()[: int(str(offset))]
    first, second = wal[: len(wal) // 2], wal[len(wal) // 2 :]
    archive = WalArchive.open(
        LocalStore(tmp_path / "repo"),
        MasterKey(secrets.token_bytes(32), "test"),
        system_identifier=sysid,
        segment_size=SEGMENT,
    )
    spool = tmp_path / "spool"
    spool.mkdir()
    partial = spool / f"{name}.partial"
    partial.write_bytes(first + bytes(SEGMENT - len(first)))  # pre-allocated, as pg_receivewal
    state = StreamState()
    log = logging.LoggerAdapter(logging.getLogger("test"))
    uploader = SpoolUploader(spool, archive, state, log, lambda: True)
    uploader.upload()
    assert state.repository_error is None
    assert archive.get_partial(str(name)).rstrip(b"\0") == first.rstrip(b"\0")
    stamp = partial.stat()
    with partial.open("r+b") as handle:
        handle.seek(len(first))
        handle.write(second)
    os.utime(partial, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # the same clock tick
    time.sleep(HEARTBEAT_S + 0.1)  # when the window would next be said to reach now
    uploader.upload()
    assert archive.get_partial(str(name)).rstrip(b"\0") == wal.rstrip(b"\0")
    recorded = archive.get_state("partial")
    assert recorded is not None and recorded["bytes"] == len(wal.rstrip(b"\0"))
