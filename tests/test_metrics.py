"""Prometheus metrics as Prometheus expects them, checked by the real promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Server, run_cli
from fixtures.fleet import fleet_home
from pgdr.config import PgdrSettings
from pgdr.config.pool_settings import PoolSettings
from pgdr.core.severity import Severity
from pgdr.monitoring.checks import CheckResult
from pgdr.monitoring.metrics import MetricsSnapshot, render_prometheus
from pgdr.watch import Watched, build_monitor

RULES = Path(__file__).parent.parent / "docs" / "prometheus" / "pgdr-alerts.yml"
pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing")


def promtool_metrics(text: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", "check", "metrics"], input=text.decode(), capture_output=True, text=True
    )


def test_a_real_round_passes_promtool(pg18: Server, tmp_path: Path) -> None:
    settings = PgdrSettings(home=tmp_path / "home")
    setup = build_monitor(settings, pg18.new_database(), PoolSettings(), with_pool=True)
    monitor = setup.monitor
    assert monitor.pool is not None
    monitor.pool.wait(timeout=30)
    snap = monitor.run_once()
    text = render_prometheus(snap)
    checked = promtool_metrics(text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    body = text.decode()
    assert 'pgdr_pool_connections{database="default",state="idle"}' in body
    assert "pgdr_pool_requests_waiting" in body and "pgdr_latency_seconds" in body
    assert 'pgdr_incidents_open{database="default",severity="P1"}' in body
    # nothing protects this database yet: no backup metric is invented
    assert "pgdr_last_backup_age_seconds" not in body
    monitor.pool.close()


def full_snapshot() -> MetricsSnapshot:
    def check(name: str, ok: bool, **facts: float) -> CheckResult:
        return CheckResult(name, ok, None if ok else Severity.P1, name, details=[facts])

    checks = [
        CheckResult("database_up", True, None, "up", 1),
        check("backup_age", True, age_seconds=3600, size_bytes=1e9, duration_seconds=42),
        CheckResult("backup_failed", True, None, "ok", 0),
        check("wal_streamer", False, up=0, lag_bytes=600_000, lag_seconds=30, window_seconds=86400),
        check("restore_test", True, age_seconds=86400, rto_seconds=120),
        check("drill_overdue", True, rto_seconds=300, rpo_seconds=0.5),
    ]
    return MetricsSnapshot(
        collected_at=time.time(),
        healthy=True,
        latency_ms=4.0,
        pool={"pool_size": 4, "pool_available": 3, "requests_waiting": 0},
        report=None,
        queries=None,
        checks=checks,
        incidents=[{"severity": "P1"}],
        counters={"rounds": 3, "notifications_failed": 1},
    )


def test_every_metric_and_the_alert_rules_pass_promtool() -> None:
    text = render_prometheus(full_snapshot())
    checked = promtool_metrics(text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    body = text.decode()
    names = set(re.findall(r"^(pgdr_[a-z_]+)", body, re.M))
    assert all(n.startswith("pgdr_") for n in re.findall(r"^([a-z_]+)[{ ]", body, re.M))
    for counter in re.findall(r"^# TYPE (\S+) counter", body, re.M):
        assert f"{counter}_total" in names or counter.endswith("_total")
    for unit in ("_seconds", "_bytes"):
        assert any(n.endswith(unit) for n in names)
    assert 'pgdr_wal_lag_bytes{database="default"} 600000.0' in body
    assert "pgdr_recovery_window_seconds" in body and "pgdr_restore_test_rto_seconds" in body
    assert "pgdr_last_drill_rpo_seconds" in body and "pgdr_notifications_failed_total" in body
    rules = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    used = set(re.findall(r"\b(pgdr_[a-z_]+)", RULES.read_text()))
    assert used - names == set(), "alert rules use metrics pgdr does not export"


def test_two_configured_databases_are_labelled_apart(
    pg18: Server, cli_env: dict[str, str], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    urls = {"alpha": pg18.new_database(), "beta": pg18.new_database()}
    fleet = fleet_home(home, urls)
    settings = PgdrSettings(home=home)
    snaps = []
    for name, url in urls.items():
        watched = Watched(name, home / "records" / "databases" / name)
        snaps.append(
            build_monitor(settings, url, PoolSettings(), watched=watched).monitor.run_once()
        )
    text = render_prometheus(*snaps)
    checked = promtool_metrics(text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    body = text.decode()
    assert body.count("# TYPE pgdr_up gauge") == 1  # one family, a series per database
    assert 'pgdr_up{database="alpha"} 1.0' in body and 'pgdr_up{database="beta"} 1.0' in body
    assert 'database="default"' not in body
    env = cli_env | fleet
    env.pop("DATABASE_URL", None)
    one = run_cli("monitor", "run", "--once", "--db", "beta", "--json", env=env)
    data = json.loads(one.stdout)
    assert data["database_name"] == "beta", one.stderr
    assert (home / "records" / "databases" / "beta" / "checks").is_dir()
