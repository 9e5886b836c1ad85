"""Monitoring against a real server: the runbook's health SQL, checks, incidents, metrics."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg

from conftest import Server, run_cli
from pgdr.cluster import LocalCluster, choose_installation, find_free_port
from pgdr.config import PgdrSettings
from pgdr.incident.store import IncidentLog
from pgdr.monitoring import MonitorConfig, Severity, collect_report, run_checks
from pgdr.monitoring.checks import CheckResult
from pgdr.monitoring.metrics import render_prometheus
from pgdr.monitoring.monitor import Monitor


def test_report_finds_sizes_long_queries_and_bloat(pg18: Server) -> None:
    db = pg18.new_database()
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE churn (id int) WITH (autovacuum_enabled = off)")
        conn.execute("INSERT INTO churn SELECT generate_series(1, 5000)")
        conn.execute("DELETE FROM churn WHERE id <= 3000")
        conn.execute("SELECT pg_stat_force_next_flush()")
    sleeper = threading.Thread(
        target=lambda: psycopg.connect(db, autocommit=True).execute("SELECT pg_sleep(4)")
    )
    sleeper.start()
    time.sleep(2)
    try:
        with psycopg.connect(db) as conn:
            report = collect_report(conn, long_query_seconds=1)
    finally:
        sleeper.join()
    tables = {t.table: t.bytes for t in report.tables}
    assert tables["embeddings"] > 0 and "churn" in tables
    assert any("pg_sleep" in q.query for q in report.long_queries)
    churn = next(b for b in report.bloat if b.table == "churn")
    assert churn.dead_tuples == 3000 and churn.dead_pct == 60.0
    results, _ = run_checks(db, config=MonitorConfig(long_query_seconds=1))
    by_name = {r.name: r for r in results}
    assert by_name["database_up"].ok and by_name["latency"].ok
    assert not by_name["bloat"].ok and by_name["bloat"].severity is Severity.P3


def test_outage_opens_a_p0_incident_that_resolves(settings: PgdrSettings, tmp_path: Path) -> None:
    cluster = LocalCluster(settings.home / "clusters" / "outage", settings)
    cluster.create(choose_installation(None, 18))
    cluster.start()
    try:
        monitor = Monitor(cluster.conninfo(), tmp_path / "records")
        snap = monitor.run_once()
        assert snap.healthy and monitor.incidents.open_incidents() == []
        cluster.stop(mode="immediate")
        snap = monitor.run_once()
        assert not snap.healthy
        assert [c.name for c in snap.checks if c.skipped] == [
            "latency",
            "connections",
            "long_running_queries",
            "bloat",
        ]
        (incident,) = monitor.incidents.open_incidents()
        assert incident.severity == "P0" and incident.review_required
        assert "Identify root cause" in incident.review_steps
        metrics = render_prometheus(snap).decode()
        assert 'pgdr_up{database="default"} 0.0' in metrics
        assert 'pgdr_incidents_open{database="default",severity="P0"} 1.0' in metrics
        cluster.start()
        snap = monitor.run_once()
        assert snap.healthy and monitor.incidents.open_incidents() == []
        (resolved,) = monitor.incidents.all()
        assert [e["event"] for e in resolved.events] == ["opened", "resolved"]
        (history_file,) = (tmp_path / "records" / "checks").glob("*.jsonl")
        history = history_file.read_text()
        assert len(history.splitlines()) == 3
    finally:
        cluster.destroy()


def test_incidents_escalate_and_stay_single(tmp_path: Path) -> None:
    log = IncidentLog(tmp_path)
    slow = CheckResult("latency", False, Severity.P2, "slow")
    log.update([slow], now=1.0)
    log.update([slow], now=2.0)
    assert len(log.open_incidents()) == 1
    log.update([CheckResult("latency", False, Severity.P1, "slower")], now=3.0)
    (incident,) = log.open_incidents()
    assert incident.severity == "P1" and incident.review_required
    assert [e["event"] for e in incident.events] == ["opened", "escalated"]


def test_metrics_json_and_prometheus(pg18: Server, tmp_path: Path) -> None:
    monitor = Monitor(pg18.new_database(), tmp_path)
    snap = monitor.run_once()
    data = snap.as_dict()
    assert data["database"]["healthy"] is True
    assert data["queries"]["commits"] > 0 and "rollback_pct" in data["errors"]
    text = render_prometheus(snap).decode()
    assert 'pgdr_up{database="default"} 1.0' in text
    assert 'pgdr_table_size_bytes{database="default",table="embeddings"}' in text
    assert 'pgdr_check_ok{check="database_up",database="default"} 1.0' in text


def test_monitor_cli(pg18: Server, cli_env: dict[str, str]) -> None:
    env = cli_env | {"DATABASE_URL": pg18.new_database()}
    result = run_cli("monitor", "run", "--once", "--json", env=env)
    # the database is fine, but nothing protects it yet: no backup, no WAL, no restore test
    assert result.code == 1, result.stderr
    assert result.stdout, result.stderr
    round_ = json.loads(result.stdout)
    assert round_["database"]["healthy"] is True and round_["state"] == "red"
    failing = {c["name"] for c in round_["checks"] if not c["ok"] and not c["skipped"]}
    assert {"backup_age", "restore_test", "drill_overdue"} <= failing
    report = run_cli("monitor", "report", "--json", env=env)
    assert report.code == 0 and json.loads(report.stdout)["max_connections"] == 100
    levels = json.loads(run_cli("monitor", "severities", "--json", env=env).stdout)
    assert [lvl["severity"] for lvl in levels] == ["P0", "P1", "P2", "P3"]
    assert levels[0]["rto_hours"] == 1 and levels[1]["rto_hours"] == 4
    down = env | {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{find_free_port()}/x"}
    result = run_cli("monitor", "run", "--once", env=down)
    assert result.code == 1 and "database_up" in result.stdout
    listed = json.loads(run_cli("monitor", "incidents", "--json", env=down).stdout)
    assert listed and listed[0]["severity"] == "P0"
