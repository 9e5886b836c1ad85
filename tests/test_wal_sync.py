"""Synchronous streaming: commits wait for pgdr, the alerted degrade, and the operator switch."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from fixtures.wal import WalEnv
from test_pitr import ids, restore, stop_restored


def sync_state(w: WalEnv) -> str | None:
    rows = w.sql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'pgdr'")
    return str(rows[0][0]) if rows else None


def set_replication_allowed(w: WalEnv, allowed: bool) -> None:
    hba = w.cluster.data_dir / "pg_hba.conf"
    lines = [line for line in hba.read_text().splitlines() if "pgdr-test-reject" not in line]
    if not allowed:
        lines.insert(0, "local replication all reject # pgdr-test-reject")
    hba.write_text("\n".join(lines) + "\n")
    w.sql("SELECT pg_reload_conf()")
    if not allowed:
        w.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")


def _store_incident(w: WalEnv) -> dict[str, Any] | None:
    listed = json.loads(w.cli("incident", "list", "--all", "--json").stdout)
    return next((i for i in listed if i["check"] == "wal-sync-degraded"), None)


@pytest.mark.slow
def test_synchronous_commits_wait_degrade_and_come_back(walenv: WalEnv) -> None:
    w = walenv
    stream = w.start_stream("--synchronous", "--degrade-after", "3s")
    w.wait_for(lambda: sync_state(w) == "sync", what="a synchronous standby")
    assert w.sql("SHOW synchronous_standby_names") == [('"pgdr"',)]
    acknowledged = w.insert(20)  # every one of these returned only once pgdr had flushed it

    # the streamer cannot reconnect: commits block, then pgdr degrades to async, loudly
    set_replication_allowed(w, False)
    done = threading.Event()
    blocked_ids: list[int] = []

    def write() -> None:
        blocked_ids.extend(w.insert(1))
        done.set()

    writer = threading.Thread(target=write)
    began = time.monotonic()
    writer.start()
    assert not done.wait(1.5), "a commit returned while no synchronous standby was connected"
    assert done.wait(60), "the degrade did not release the commit"
    assert time.monotonic() - began >= 2.5
    assert w.sql("SHOW synchronous_standby_names") == [("",)]
    # the streamer says so and records the degrade just after it switched (and released the commit)
    w.wait_for(lambda: "ASYNCHRONOUS" in w.stream_log(), what="the degrade in the log")
    w.wait_for(lambda: _store_incident(w) is not None, what="the degrade incident")
    incidents = list((w.repo / "incidents").glob("*wal-sync-degraded.json"))
    assert incidents and json.loads(incidents[0].read_text())["severity"] == "critical"
    degraded = _store_incident(w)  # in the one incident store of `pgdr incident list`
    assert degraded and degraded["severity"] == "P1" and degraded["open"]
    assert "bring the streamer back" in degraded["action"]

    # it comes back on its own once it has caught up
    set_replication_allowed(w, True)
    w.wait_for(lambda: sync_state(w) == "sync", what="synchronous commits to come back")
    assert "Caught up" in w.stream_log()
    w.wait_for(lambda: not (_store_incident(w) or {}).get("open"), what="the incident resolved")
    w.insert(5)

    # and the operator's explicit switch
    off = w.cli("wal", "sync", "off", "--json")
    assert off.code == 0 and json.loads(off.stdout)["synchronous_standby_names"] == ""
    time.sleep(2.5)  # the running streamer respects the operator's choice
    assert w.sql("SHOW synchronous_standby_names") == [("",)]
    on = w.cli("wal", "sync", "on")
    assert on.code == 0
    assert w.sql("SHOW synchronous_standby_names") == [('"pgdr"',)]

    # a restore does not inherit the wait for a standby it does not have
    everything = ids(w.conninfo)
    assert set(acknowledged) | set(blocked_ids) <= everything
    w.cli("backup")  # a base for the restore below
    w.insert(3)
    everything = ids(w.conninfo)
    time.sleep(1)
    latest = restore(w, "--latest")
    assert ids(latest["url"]) == everything
    import psycopg

    with psycopg.connect(latest["url"], autocommit=True) as conn:
        assert conn.execute("SHOW synchronous_standby_names").fetchone() == ("",)
        conn.execute("INSERT INTO txlog (id) VALUES (-1)")  # would hang if it waited
    stop_restored(w, latest)
    w.stop_stream(stream)


@pytest.mark.slow
def _start_as_a_copy(w: WalEnv) -> None:
    """Restart the cluster as pgdr starts a restored copy: no synchronous standby, on the
    server's command line."""
    meta = json.loads(w.cluster.meta_file.read_text())
    meta.setdefault("server_options", {})["synchronous_standby_names"] = ""
    w.cluster.meta_file.write_text(json.dumps(meta))
    w.cluster.stop()
    w.cluster.start()


def test_a_copy_started_as_primary_makes_commits_wait(walenv: WalEnv) -> None:
    """``pgdr cluster start NAME --as-primary``: refused while the copy runs; once stopped, it
    starts without the copy's options, for good, and the synchronous streamer makes commits
    wait on it."""
    w = walenv
    _start_as_a_copy(w)
    name = w.cluster.name
    running = w.cli("cluster", "start", name, "--as-primary")
    assert running.code == 2 and "stop it first" in running.stderr, running.stderr
    w.cluster.stop()
    started = w.cli("cluster", "start", name, "--as-primary", "--json")
    assert started.code == 0, started.stderr
    data = json.loads(started.stdout)
    assert data["dropped_options"] == ["synchronous_standby_names"]
    assert data["settings"]["synchronous_standby_names"]["source"] != "command line"
    assert data["settings"]["archive_mode"]["source"] != "command line"
    w.cluster.stop()
    again = w.cli("cluster", "start", name, "--as-primary")  # the human form; nothing to drop
    assert again.code == 0, again.stderr
    for setting in ("archive_mode = ", "synchronous_standby_names = ", "(from "):
        assert setting in again.stdout, again.stdout
    assert "command line" not in again.stdout
    w.cluster.stop()
    w.cluster.start()  # a later start keeps it a primary
    stream = w.start_stream("--synchronous")
    try:
        w.wait_for(lambda: sync_state(w) == "sync", what="a synchronous standby")
        assert "commits now wait" in w.stream_log()
        assert "command line" not in w.stream_log()
    finally:
        w.stop_stream(stream)


def test_a_setting_pinned_on_the_command_line_is_a_degrade_not_a_wait(walenv: WalEnv) -> None:
    """synchronous_standby_names given on the server's command line (as pgdr starts a restored
    copy) cannot be changed by ALTER SYSTEM: the streamer says once that commits do not wait,
    raises the degrade, and never claims they wait."""
    w = walenv
    _start_as_a_copy(w)
    stream = w.start_stream("--synchronous")
    try:
        w.wait_for(lambda: "command line" in w.stream_log(), what="the pinned setting reported")
        time.sleep(3)  # several rounds of the guard
        log = w.stream_log()
        assert "commits now wait" not in log
        assert log.count("ALTER SYSTEM cannot change") == 1
        assert sync_state(w) == "async"
        degraded = _store_incident(w)
        assert degraded and degraded["severity"] == "P1" and degraded["open"]
        assert "do NOT wait" in degraded["message"]
    finally:
        w.stop_stream(stream)
