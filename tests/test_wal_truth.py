"""The recovery window and `pgdr status` say no more than the repository holds.

Found by a hostile review: with pg_receivewal alive but receiving nothing (stopped here with
SIGSTOP; a network black hole does the same), the window's end kept moving to "now", so a
restore to a time after 200 new commits succeeded without them (and its note said no
transaction had committed since), and `pgdr status` said "protected" 34 MB behind the server.
A WAL gap after the backup also left the database "protected", the window spanning the gap.
A second review found the proof's two holes: an asynchronous commit returns before its record
is written (the server's write position was observed), and on a quiet database the window
stopped (the receiver reports its flush position only when it closes a segment, and the
uploaded WAL is trimmed of the last record's padding).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from fixtures.wal import WalEnv
from test_pitr import backup
from test_wal_stream import segments, switch


def receiver_pid(stream_pid: int) -> int:
    out = subprocess.run(
        ["ps", "-o", "pid=,comm=", "--ppid", str(stream_pid)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    pids = [int(line.split()[0]) for line in out.splitlines() if "pg_receivewal" in line]
    assert pids, out
    return pids[0]


def streaming(w: WalEnv) -> bool:
    return bool(w.sql("SELECT 1 FROM pg_stat_replication WHERE application_name = 'pgdr'"))


def wal_status(w: WalEnv) -> tuple[int, dict[str, object]]:
    result = w.cli("wal", "status", "--json")
    return result.code, json.loads(result.stdout)


def db_status(w: WalEnv) -> dict[str, object]:
    result = w.cli("status", "--json")
    database: dict[str, object] = json.loads(result.stdout)["databases"]["default"]
    return database


def _end(w: WalEnv) -> float:
    end = wal_status(w)[1]["window_end"]
    return float(end) if isinstance(end, (int, float)) else 0.0


def protected(w: WalEnv, *stream_args: str) -> subprocess.Popen[bytes]:
    """A streamer, a backup, a few commits, and the window at the present: the streamer."""
    proc = w.start_stream(*stream_args)
    w.wait_for(lambda: streaming(w), what="the streamer to connect")
    backup(w)
    w.insert(3)
    w.wait_for(lambda: _end(w) > time.time() - 3, what="the window to reach the present")
    return proc


def test_a_stalled_receiver_stops_the_window(walenv18: WalEnv, scratch: Path) -> None:
    w = walenv18
    proc = protected(w)
    receiver = receiver_pid(proc.pid)
    os.kill(receiver, signal.SIGSTOP)
    try:
        stalled_at = time.time()
        w.insert(200)
        time.sleep(4)  # four heartbeats: the window used to be pushed to "now" by each
        _code, report = wal_status(w)
        assert report["streamer_alive"] is True
        assert isinstance(report["window_end"], float) and report["window_end"] < stalled_at
        target = datetime.fromtimestamp(time.time() - 1, UTC).isoformat()
        refused = w.cli("restore", "--target-time", target, "--to", str(scratch / "never"))
        assert refused.code in (1, 2) and "after the newest WAL" in refused.stderr
        assert not (scratch / "never").exists()

        # 20 MB more than the repository: `pgdr status` says so (it said "protected")
        w.sql(
            "CREATE TABLE big AS SELECT g, repeat('x', 300) AS pad FROM generate_series(1, 60000) g"
        )
        w.wait_for(
            lambda: "behind the server" in " ".join(map(str, db_status(w)["reasons"])),  # type: ignore[call-overload]
            timeout=30,
            what="pgdr status to say how far behind the repository is",
        )
        assert db_status(w)["state"] == "degraded"
        assert wal_status(w)[0] == 1
    finally:
        os.kill(receiver, signal.SIGCONT)
    # receiving again: the window reaches the present once the repository holds it all
    w.wait_for(lambda: _end(w) > time.time() - 5, timeout=60, what="the window to catch up")
    w.stop_stream(proc)


def test_a_gap_degrades_status_and_ends_the_window(walenv18: WalEnv) -> None:
    w = walenv18
    proc = protected(w)
    names = [switch(w) for _ in range(3)]
    w.insert(5)
    w.wait_for(lambda: set(names) <= segments(w), what="the segments uploaded")
    (w.repo / "wal" / names[1][:8] / names[1]).unlink()  # lost (a slot invalidated, say)
    code, report = wal_status(w)
    assert code == 1 and report["gaps"]
    assert report["window_end"] is None  # not "now": no restore passes the gap
    database = db_status(w)
    assert database["state"] != "protected"
    assert any("missing segment" in str(r) for r in database["reasons"])  # type: ignore[attr-defined]
    w.stop_stream(proc)


def test_a_quiet_database_keeps_its_window_at_the_present(walenv18: WalEnv) -> None:
    w = walenv18
    proc = protected(w)
    ages = []
    for _ in range(8):  # a healthy, idle server: the window follows the present
        time.sleep(1)
        ages.append(time.time() - _end(w))
    w.stop_stream(proc)
    assert max(ages) < 4, ages


def test_an_asynchronous_commit_is_in_the_window_only_once_held(
    walenv18: WalEnv, scratch: Path
) -> None:
    """With ``synchronous_commit = off`` a commit returns before its record is written; the
    WAL writer is slowed here so that it stays unwritten for seconds."""
    w = walenv18
    proc = protected(w, "--synchronous")
    w.sql("ALTER SYSTEM SET wal_writer_delay = '10s'")
    w.sql("SELECT pg_reload_conf()")
    time.sleep(1.5)
    with psycopg.connect(w.conninfo, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("INSERT INTO txlog (id) VALUES (424242)")
        committed_at = time.time()
    time.sleep(3)  # three heartbeats; the record is still unwritten
    receiver = receiver_pid(proc.pid)
    os.kill(receiver, signal.SIGSTOP)
    try:
        assert _end(w) < committed_at
        target = datetime.fromtimestamp(committed_at + 0.2, UTC).isoformat()
        refused = w.cli("restore", "--target-time", target, "--to", str(scratch / "never"))
        assert refused.code in (1, 2) and "after the newest WAL" in refused.stderr
    finally:
        os.kill(receiver, signal.SIGCONT)
        w.sql("ALTER SYSTEM RESET wal_writer_delay")
        w.sql("SELECT pg_reload_conf()")
    w.wait_for(lambda: _end(w) > committed_at, timeout=60, what="the window to take it in")
    w.stop_stream(proc)
