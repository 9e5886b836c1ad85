"""Notifications against real local receivers: webhook, Slack-compatible, SMTP; faults too."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fixtures.agent import new_cluster
from fixtures.receivers import HttpReceiver, SmtpSink
from pgdr.config import PgdrSettings
from pgdr.config.pool_settings import PoolSettings
from pgdr.core.errors import ConfigError
from pgdr.core.severity import Severity
from pgdr.incident.store import FlapPolicy, IncidentLog
from pgdr.monitoring.checks import CheckResult
from pgdr.notify import Dispatcher
from pgdr.notify.config import from_table
from pgdr.watch import build_monitor


def _config(hook: str, smtp: SmtpSink | None = None, **notify: object) -> dict[str, object]:
    table: dict[str, object] = {
        "contacts": [
            {"name": "Olga", "role": "on-call", "channels": [f"webhook:{hook}"]},
            {"name": "Dana", "role": "DBA", "channels": ["email:dana@example.com"]},
            {"name": "Lee", "role": "DevOps lead", "channels": [f"slack:{hook}?token=s3cret"]},
        ],
        "escalation": {"P0": {"first": ["on-call"], "then": ["DBA", "DevOps lead"]}},
        "notify": {"timeout_seconds": 1, "dashboard_url": "http://dash.example/"} | notify,
    }
    if smtp is not None:
        table["notify"] |= {"smtp": {"host": smtp.host, "port": smtp.port}}  # type: ignore[operator]
    return table


def _down(log: IncidentLog, now: float) -> None:
    log.update([CheckResult("database_up", False, Severity.P0, "complete outage")], now=now)


def test_open_escalate_ack_resolve_are_sent_once_each(
    tmp_path: Path, http_receiver: HttpReceiver, smtp_sink: SmtpSink
) -> None:
    log = IncidentLog(tmp_path / "incidents")
    config = from_table(_config(http_receiver.url, smtp_sink), {})
    dispatcher = Dispatcher(config, log, tmp_path)
    _down(log, now=1000.0)
    dispatcher.run(now=1001.0)
    (opened,) = http_receiver.received
    assert opened["event"] == "opened" and smtp_sink.messages == []  # only on-call first
    text = opened["text"]
    for part in (
        "complete outage",
        "Since:",
        "P0 (Critical, RTO 1 h)",
        "Runbook action:",
        "http://dash.example/",
        "pgdr incident ack",
    ):
        assert part in text
    dispatcher.run(now=1002.0)
    assert len(http_receiver.received) == 1  # deduplicated
    dispatcher.run(now=1000.0 + 15 * 60)  # unacknowledged for 15 minutes: the next level
    assert smtp_sink.subjects("dana@example.com") == [
        "[pgdr P0] ESCALATED (unacknowledged): database_up"
    ]
    slack = [r for r in http_receiver.received if "incident" not in r]
    assert len(slack) == 1 and "ESCALATED" in slack[0]["text"]
    (incident,) = log.open_incidents()
    log.acknowledge(incident, "olga")
    log.update([CheckResult("database_up", True, None, "answers again")], now=2000.0)
    dispatcher.run(now=2001.0)
    assert http_receiver.events("database_up") == ["opened", "acknowledged", "resolved"]
    assert [s.split("] ")[1] for s in smtp_sink.subjects()] == [
        "ESCALATED (unacknowledged): database_up",
        "ACKNOWLEDGED: database_up",
        "RESOLVED: database_up",
    ]
    # webhook URLs are secrets: never written into the delivery records
    assert "s3cret" not in "".join(p.read_text() for p in (tmp_path / "notifications").glob("*"))


def test_acknowledged_incident_is_not_escalated(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    log = IncidentLog(tmp_path / "incidents")
    dispatcher = Dispatcher(from_table(_config(http_receiver.url), {}), log, tmp_path)
    _down(log, now=1000.0)
    log.acknowledge(log.open_incidents()[0], "olga")
    dispatcher.run(now=1000.0 + 3600)
    assert http_receiver.events("database_up") == ["opened", "acknowledged"]
    assert not any(e["event"] == "escalation" for e in log.all()[0].events)


def test_webhook_500_and_timeout_are_recorded_and_retried(
    tmp_path: Path, http_receiver: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    log = IncidentLog(tmp_path / "incidents")
    table = {"notify": {"timeout_seconds": 1}}  # no contacts: only the variable's webhook
    dispatcher = Dispatcher(
        from_table(table, {"PGDR_NOTIFY_WEBHOOK": http_receiver.url}), log, tmp_path
    )
    _down(log, now=1000.0)
    http_receiver.fail_next = 1
    with caplog.at_level(logging.WARNING, "pgdr.notify"):
        (first,) = dispatcher.run(now=1001.0)
    assert not first.delivered and "answered HTTP 500" in (first.error or "")
    (record,) = caplog.records
    assert "will be retried" in record.getMessage() and "\n" not in record.getMessage()
    http_receiver.stall_next = 1
    (second,) = dispatcher.run(now=1002.0)
    assert not second.delivered and "did not answer within 1 s" in (second.error or "")
    (third,) = dispatcher.run(now=1003.0)
    assert third.delivered and third.attempts == 3
    assert http_receiver.events("database_up") == ["opened"]
    assert dispatcher.run(now=1004.0) == []
    assert dispatcher.failing() == []


def test_smtp_refusing_and_a_bad_address_lose_nothing_else(
    tmp_path: Path, http_receiver: HttpReceiver, smtp_sink: SmtpSink
) -> None:
    table = _config(http_receiver.url, smtp_sink)
    table["contacts"] += [  # type: ignore[operator]
        {"name": "Typo", "role": "on-call", "channels": ["email:not-an-address"]},
        {"name": "Refused", "role": "on-call", "channels": ["email:gone@example.com"]},
    ]
    smtp_sink.refuse.add("gone@example.com")
    log = IncidentLog(tmp_path / "incidents")
    dispatcher = Dispatcher(from_table(table, {}), log, tmp_path)
    _down(log, now=1000.0)
    outcomes = {o.contact: o for o in dispatcher.run(now=1001.0)}
    assert outcomes["Olga"].delivered
    assert "is not an email address" in (outcomes["Typo"].error or "")
    assert "refused gone@example.com" in (outcomes["Refused"].error or "")
    assert {f["contact"] for f in dispatcher.failing()} == {"Typo", "Refused"}
    smtp_sink.refuse.clear()
    again = {o.contact: o.delivered for o in dispatcher.run(now=1002.0)}
    assert again == {"Typo": False, "Refused": True}
    assert smtp_sink.subjects("gone@example.com") == ["[pgdr P0] OPEN: database_up"]


def test_smtp_server_refusing_everything(
    tmp_path: Path, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    smtp_sink.refuse_all = True
    table = {
        "contacts": [{"name": "Dana", "role": "DBA", "channels": ["email:dana@example.com"]}],
        "notify": {"smtp": {"host": smtp_sink.host, "port": smtp_sink.port}},
    }
    log = IncidentLog(tmp_path / "incidents")
    dispatcher = Dispatcher(from_table(table, {}), log, tmp_path)
    _down(log, now=1000.0)
    with caplog.at_level(logging.WARNING, "pgdr.notify"):
        (outcome,) = dispatcher.run(now=1001.0)
    assert not outcome.delivered and "refused dana@example.com" in (outcome.error or "")
    (record,) = caplog.records  # one sentence in the log
    text = record.getMessage()
    assert text.startswith("Notifying Dana of incident") and text.endswith("will be retried.")
    assert "\n" not in text and "refused dana@example.com" in text
    assert {f["contact"] for f in dispatcher.failing()} == {"Dana"}  # kept to retry


def test_flapping_database_opens_after_n_and_resolves_after_m(tmp_path: Path) -> None:
    log = IncidentLog(tmp_path, FlapPolicy(open_after=3, resolve_after=2))
    down = CheckResult("database_up", False, Severity.P0, "down")
    up = CheckResult("database_up", True, None, "up")
    for now, result in enumerate([down, up, down, down, up, down], start=1):
        log.update([result], now=float(now))
    assert log.open_incidents() == []  # never three failures in a row
    for now in (7.0, 8.0):
        log.update([down], now=now)
    (incident,) = log.open_incidents()
    log.update([up], now=9.0)
    log.update([down], now=10.0)
    log.update([up], now=11.0)
    assert log.open_incidents() == [incident] or len(log.open_incidents()) == 1
    log.update([up], now=12.0)
    assert log.open_incidents() == []
    assert [e["event"] for e in log.all()[0].events] == ["opened", "resolved"]


def test_a_really_flapping_database_is_told_once_open_and_once_resolved(
    settings: PgdrSettings, tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    """A real server stopped and started between rounds; ``[monitor]`` open_after/resolve_after
    from pgdr.toml: two failures in a row open, two passes in a row resolve."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "pgdr.toml").write_text(
        "[monitor]\nopen_after = 2\nresolve_after = 2\n"
        f'[[contacts]]\nname = "Olga"\nrole = "on-call"\nchannels = ["webhook:{http_receiver.url}"]\n'
    )
    cluster = new_cluster(settings, "flapping")
    monitor = build_monitor(PgdrSettings(home=home), cluster.conninfo(), PoolSettings()).monitor
    opened = []
    try:
        for up in (False, True, False, False, True, False, True, True):
            if up:
                cluster.start()
            elif cluster.status().running:
                cluster.stop(mode="immediate")
            assert monitor.run_once().healthy is up
            opened.append(
                [i.check for i in monitor.incidents.open_incidents()].count("database_up")
            )
    finally:
        cluster.destroy()
    assert opened == [0, 0, 0, 1, 1, 1, 1, 0]
    assert http_receiver.events("database_up") == ["opened", "resolved"]
    (incident,) = [i for i in monitor.incidents.all() if i.check == "database_up"]
    assert [e["event"] for e in incident.events] == ["opened", "resolved"]


def test_bad_contact_configuration_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match="not one of webhook:URL"):
        from_table({"contacts": [{"name": "x", "role": "DBA", "channels": ["pager:1"]}]}, {})
    with pytest.raises(ConfigError, match="P0, P1, P2 or P3"):
        from_table({"escalation": {"P9": {"first": ["DBA"]}}}, {})
