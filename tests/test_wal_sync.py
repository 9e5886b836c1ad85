"""Synchronous streaming: commits wait for pgdr, the alerted degrade, and the operator switch."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
import pytest

from fixtures.wal import WalEnv
from test_bad_input import assert_one_sentence
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
    with psycopg.connect(latest["url"], autocommit=True) as conn:
        assert conn.execute("SHOW synchronous_standby_names").fetchone() == ("",)
        conn.execute("INSERT INTO txlog (id) VALUES (-1)")  # would hang if it waited
    stop_restored(w, latest)
    w.stop_stream(stream)


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


def commit_waited(w: WalEnv, bound_s: float = 3.0) -> bool:
    """Whether one commit waited for a synchronous standby. The wait is bounded so that a
    blocking setting fails the test fast instead of hanging it: statement_timeout is disabled
    before PostgreSQL waits for the standby, so the bound is a cancel request (the commit then
    returns with a warning that it did not wait)."""
    notices: list[str] = []
    with psycopg.connect(w.conninfo, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute(f"SET statement_timeout = '{bound_s:g}s'")
        bound = threading.Timer(bound_s, conn.cancel_safe)
        began = time.monotonic()
        bound.start()
        try:
            conn.execute("INSERT INTO txlog (id) VALUES (nextval('txlog_id'))")
        finally:
            bound.cancel()
        waited = time.monotonic() - began
    return waited >= bound_s * 0.8 or any("synchronous replication" in n for n in notices)


def walsender_streaming(w: WalEnv, application: str = "pgdr") -> bool:
    rows = w.sql(
        "SELECT 1 FROM pg_stat_replication WHERE application_name = %s AND state = 'streaming'",
        (application,),
    )
    return bool(rows)


def assert_sync_on_refused(w: WalEnv, *phrases: str) -> None:
    """`wal sync on` refused in one sentence, exit 2; nothing changed and commits go on."""
    on = w.cli("wal", "sync", "on")
    assert not commit_waited(w), f"commits block after `wal sync on`: {on.stdout}"
    assert on.code == 2, on.stdout + on.stderr
    sentence = assert_one_sentence(on.stderr)
    for phrase in phrases:
        assert phrase in sentence, sentence
    assert "RPO 0" not in on.stdout
    assert w.sql("SHOW synchronous_standby_names") == [("",)]


def test_sync_on_is_refused_without_a_synchronous_streamer(walenv18: WalEnv) -> None:
    """`wal sync on` makes every commit wait for pgdr: refused unless this repository's
    streamer confirms every flush (--synchronous) and is connected now. An asynchronous
    pg_receivewal confirms a flush only at its status interval, so commits would block."""
    w = walenv18
    assert_sync_on_refused(w, "pgdr wal stream --synchronous")  # no streamer at all
    stream = w.start_stream()  # asynchronous
    try:
        w.wait_for(lambda: walsender_streaming(w), what="the asynchronous streamer")
        w.wait_for(lambda: bool(_status(w).get("streamer")), what="the streamer's state")
        assert_sync_on_refused(w, "asynchronous", "pgdr wal stream --synchronous")
    finally:
        w.stop_stream(stream)
    assert not list((w.repo / "wal").rglob("*sync-switch*")), "the refusal recorded a switch"


def start_other_repository_stream(w: WalEnv) -> subprocess.Popen[bytes]:
    """An asynchronous `pgdr wal stream` of another repository, also connected as "pgdr"."""
    other = w.repo.parent / "other"
    log = (w.repo.parent / "stream-other.log").open("wb")
    args = ["wal", "stream", "--slot", "pgdr_other", "--spool", str(other / "spool")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgdr", *args],
        env=w.env | {"PGDR_REPO": str(other / "repo")},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    w.procs.append(proc)
    return proc


def test_a_walsender_still_starting_up_is_not_a_namesake(walenv18: WalEnv) -> None:
    """A walsender under our name that has not begun streaming (as our own is for a moment,
    before it takes its slot) is not one PostgreSQL can wait for: the synchronous streamer
    does not call it a namesake, and commits wait for pgdr as usual (a CI run once saw our own
    starting walsender counted, and a false "other walsenders" degrade)."""
    w = walenv18
    idle = psycopg.connect(w.conninfo, replication="true", application_name="pgdr")
    try:
        assert w.sql("SELECT state FROM pg_stat_replication WHERE application_name = 'pgdr'") == [
            ("startup",)
        ]
        stream = w.start_stream("--synchronous")
        try:
            streaming = (
                "SELECT sync_state FROM pg_stat_replication"
                " WHERE application_name = 'pgdr' AND state = 'streaming'"
            )
            w.wait_for(lambda: w.sql(streaming) == [("sync",)], what="a synchronous standby")
            time.sleep(2)  # more rounds of the guard
            log = w.stream_log()
            assert "connect as" not in log and "commits now wait" in log, log
            assert _status(w)["streamer"]["namesakes"] == 0
            assert not commit_waited(w)
        finally:
            w.stop_stream(stream)
    finally:
        idle.close()


def test_sync_on_needs_this_repositorys_synchronous_streamer_alone(walenv18: WalEnv) -> None:
    """Another repository's streamer does not make this repository's RPO 0, and PostgreSQL
    could wait for it under the shared name; once this repository's synchronous streamer is
    the only "pgdr" connected, `wal sync on` turns commits waiting back on and they go on."""
    w = walenv18
    other = start_other_repository_stream(w)
    w.wait_for(lambda: walsender_streaming(w), what="the other repository's streamer")
    assert_sync_on_refused(w, "of this repository is running")
    assert w.cli("wal", "sync", "off").code == 0  # so our streamer does not turn it on itself
    ours = w.start_stream("--synchronous")
    try:
        count = "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pgdr'"
        w.wait_for(lambda: w.sql(count) == [(2,)], what="both streamers")
        w.wait_for(lambda: _walsender_known(w), what="our walsender in the streamer's state")
        assert_sync_on_refused(w, "Another streamer", "another --application")
        w.stop_stream(other)
        w.wait_for(lambda: w.sql(count) == [(1,)], what="the other streamer gone")
        on = w.cli("wal", "sync", "on")
        assert on.code == 0, on.stderr
        assert w.sql("SHOW synchronous_standby_names") == [('"pgdr"',)]
        w.wait_for(lambda: sync_state(w) == "sync", what="a synchronous standby")
        assert not commit_waited(w)  # the synchronous streamer confirms every flush
    finally:
        w.stop_stream(ours)


def _status(w: WalEnv) -> dict[str, Any]:
    return dict(json.loads(w.cli("wal", "status", "--json").stdout))


def _walsender_known(w: WalEnv) -> bool:
    """Whether the streamer's state names its walsender (not merely has the key, as null)."""
    streamer = _status(w).get("streamer") or {}
    return streamer.get("walsender_pid") is not None


def test_a_synchronous_streamer_that_shares_its_name_does_not_claim_rpo_0(
    walenv18: WalEnv,
) -> None:
    """Another walsender connected as "pgdr" (another repository's asynchronous streamer) could
    be the one PostgreSQL waits for: the synchronous streamer does not turn commits waiting on
    while it is there (they would stall on the other's occasional confirmations), says so once
    (P1), and `wal status` does not report RPO 0; once it is alone, commits wait for it."""
    w = walenv18
    other = start_other_repository_stream(w)
    w.wait_for(lambda: walsender_streaming(w), what="the other repository's streamer")
    ours = w.start_stream("--synchronous")
    try:
        count = "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pgdr'"
        w.wait_for(lambda: w.sql(count) == [(2,)], what="both streamers")
        w.wait_for(lambda: "connect as" in w.stream_log(), what="the shared name reported")
        time.sleep(3)  # several rounds of the guard
        log = w.stream_log()
        assert log.count('other walsender(s) connect as "pgdr"') == 1, log
        assert "commits now wait" not in log
        assert w.sql("SHOW synchronous_standby_names") == [("",)]
        assert not commit_waited(w)
        status = _status(w)
        assert status["synchronous"] is False and status["streamer"]["namesakes"] == 1
        degraded = _store_incident(w)
        assert degraded and degraded["severity"] == "P1" and degraded["open"]

        w.stop_stream(other)
        w.wait_for(lambda: sync_state(w) == "sync", what="commits waiting for pgdr alone")
        assert w.sql("SHOW synchronous_standby_names") == [('"pgdr"',)]
        w.wait_for(lambda: _status(w)["synchronous"] is True, what="RPO 0 reported")
    finally:
        w.stop_stream(ours)
        w.stop_stream(other)


def test_sync_on_keeps_the_streamers_quorum(walenv18: WalEnv) -> None:
    """`wal sync off` then `on` gives back the value the streamer set (its --quorum-with),
    not pgdr alone."""
    w = walenv18
    stream = w.start_stream("--synchronous", "--quorum-with", "replica2")
    quorum = [('ANY 1 ("pgdr", "replica2")',)]
    try:
        w.wait_for(lambda: w.sql("SHOW synchronous_standby_names") == quorum, what="quorum")
        assert w.cli("wal", "sync", "off").code == 0
        assert w.sql("SHOW synchronous_standby_names") == [("",)]
        on = w.cli("wal", "sync", "on")
        assert on.code == 0, on.stderr
        assert w.sql("SHOW synchronous_standby_names") == quorum
        assert not commit_waited(w)
    finally:
        w.stop_stream(stream)
