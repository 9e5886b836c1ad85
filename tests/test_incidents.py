"""Incidents reach a human, end to end with the real streamer, server and local receivers.

The streamer and then the database stop: each opens an incident in the next check round, the
webhook and the SMTP sink receive it, the next level hears when nobody acknowledges, recovery is
sent, and the post-incident review is drafted and stored.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from conftest import Server
from fixtures.fleet import fleet_home
from fixtures.receivers import HttpReceiver, SmtpSink
from fixtures.wal import WalEnv
from pgdr.config import PgdrSettings
from pgdr.config.pool_settings import PoolSettings
from pgdr.watch import Watched, build_monitor


def _config(path: Path, hook: str, smtp: SmtpSink) -> Path:
    path.write_text(
        f"""
[monitor]
max_backup_age_hours = 1

[notify]
dashboard_url = "http://127.0.0.1:8080/"
timeout_seconds = 2

[notify.smtp]
host = "{smtp.host}"
port = {smtp.port}
sender = "pgdr@example.com"

[[contacts]]
name = "Olga"
role = "on-call"
channels = ["webhook:{hook}", "email:olga@example.com"]

[[contacts]]
name = "Dana"
role = "DBA"
channels = ["email:dana@example.com"]

[escalation.P0]
first = ["on-call"]
then = ["DBA"]
after_minutes = 0.02

[escalation.P1]
first = ["on-call"]
then = ["DBA"]
after_minutes = 0.02
"""
    )
    return path


def _round(w: WalEnv, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    from conftest import run_cli

    result = run_cli("monitor", "run", "--once", "--json", env=env)
    assert result.code in (0, 1), result.stderr
    return result.code, json.loads(result.stdout)


def _check(round_: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in round_["checks"] if c["name"] == name)


def _wal_ok(w: WalEnv) -> bool:
    return bool(w.cli("wal", "status", "--json").code == 0)


def test_streamer_then_database_down_reach_a_human(
    walenv18: WalEnv, tmp_path: Path, http_receiver: HttpReceiver, smtp_sink: SmtpSink
) -> None:
    from conftest import run_cli

    w = walenv18
    env = w.env | {
        "PGDR_HOME": str(tmp_path / "home"),
        "PGDR_CONFIG": str(_config(tmp_path / "pgdr.toml", http_receiver.url, smtp_sink)),
    }
    w.env = env
    stream = w.start_stream()
    w.wait_for(lambda: _wal_ok(w), what="the streamer to be in order")
    _code, first = _round(w, env)
    assert _check(first, "wal_streamer")["ok"] and _check(first, "database_up")["ok"]

    # 1. the streamer stops while the server keeps writing: the server is ahead of pgdr
    w.stop_stream(stream)
    w.insert(200)
    status = w.cli("wal", "status", "--json")
    assert status.code == 1 and "silent" in status.stderr
    assert json.loads(status.stdout)["lag_bytes"] > 0
    code, second = _round(w, env)
    streamer = _check(second, "wal_streamer")
    assert code == 1 and not streamer["ok"] and streamer["severity"] == "P1"
    assert http_receiver.events("wal_streamer") == ["opened"]
    assert "[pgdr P1] OPEN: wal_streamer" in smtp_sink.subjects("olga@example.com")

    # 2. the database stops: P0 within one round; listing still works while it is down
    w.cluster.stop(mode="immediate")
    _code, third = _round(w, env)
    assert third["database"]["healthy"] is False and third["state"] == "red"
    assert http_receiver.events("database_up") == ["opened"]
    assert "[pgdr P0] OPEN: database_up" in smtp_sink.subjects("olga@example.com")
    listed = run_cli("incident", "list", "--json", env=env)
    assert listed.code == 0, listed.stderr
    assert {"database_up", "wal_streamer"} <= {i["check"] for i in json.loads(listed.stdout)}

    # 3. nobody acknowledges: the next level (the DBA) hears about it
    time.sleep(2)
    _round(w, env)
    dba = smtp_sink.subjects("dana@example.com")
    assert "[pgdr P0] ESCALATED (unacknowledged): database_up" in dba

    # 4. recovery is sent to everyone who was told
    w.cluster.start()
    w.start_stream()
    w.wait_for(lambda: _wal_ok(w), what="the streamer to catch up")
    _code, fourth = _round(w, env)
    assert _check(fourth, "database_up")["ok"] and _check(fourth, "wal_streamer")["ok"]
    assert http_receiver.events("database_up") == ["opened", "resolved"]
    assert "[pgdr P0] RESOLVED: database_up" in smtp_sink.subjects("dana@example.com")
    assert http_receiver.events("wal_streamer") == ["opened", "resolved"]

    # 5. the P0 waits for its review; the draft carries the timeline
    incidents = json.loads(run_cli("incident", "list", "--all", "--json", env=env).stdout)
    outage = next(i for i in incidents if i["check"] == "database_up")
    assert outage["state"] == "review pending"
    drafted = run_cli("incident", "review", outage["id"], "--json", env=env)
    assert drafted.code == 0, drafted.stderr
    draft = Path(json.loads(drafted.stdout)["path"])
    text = draft.read_text()
    assert draft.stat().st_mode & 0o077 == 0  # it quotes incident messages: private
    assert "**opened**" in text and "**escalation**" in text and "**resolved**" in text
    early = run_cli("incident", "review", outage["id"], "--done", env=env)
    assert early.code == 2 and "still lacks: What happened" in early.stderr
    draft.write_text(text.replace("_(to be completed)_", "Written by the on-call engineer."))
    done = run_cli("incident", "review", outage["id"], "--done", "--json", env=env)
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "resolved"
    shown = run_cli("incident", "show", outage["id"], env=env)
    assert "reviewed" in shown.stdout and "Runbook Scenario 1" in shown.stdout


def test_incidents_of_every_configured_database(
    pg18: Server, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Each database of a fleet keeps its own store; the incident commands see them all."""
    from conftest import run_cli

    home = tmp_path / "home"
    fleet_home(home, {"alpha": "", "beta": ""})  # the monitors below get their URLs directly
    settings = PgdrSettings(home=home)
    for db in ("alpha", "beta"):  # nothing protects either: incidents open in each store
        watched = Watched(db, home / "records" / "databases" / db)
        build_monitor(
            settings, pg18.new_database(), PoolSettings(), watched=watched
        ).monitor.run_once()
    env = cli_env | {"PGDR_HOME": str(home)}
    listed = json.loads(run_cli("incident", "list", "--json", env=env).stdout)
    assert {i["database"] for i in listed} == {"alpha", "beta"}
    alpha = next(i for i in listed if i["database"] == "alpha" and i["check"] == "backup_age")
    ack = run_cli("incident", "ack", alpha["id"], "--by", "olga", "--json", env=env)
    assert ack.code == 0, ack.stderr
    assert json.loads(ack.stdout)["state"] == "acknowledged"
    elsewhere = run_cli("incident", "show", alpha["id"], "--db", "beta", env=env)
    assert elsewhere.code == 2 and "There is no incident" in elsewhere.stderr
    beta = json.loads(run_cli("monitor", "incidents", "--db", "beta", "--json", env=env).stdout)
    assert beta and {i["database"] for i in beta} == {"beta"}
    assert {i["id"] for i in beta} == {i["id"] for i in listed if i["database"] == "beta"}
