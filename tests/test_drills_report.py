"""``pgdr drill report``: history, last result per scenario, the quarterly schedule."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import run_cli
from pgdr.drills.report import DrillReport, add_months, next_scheduled, save_report


@pytest.fixture
def home(pgdr_home: Path) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="drill-home-", dir=pgdr_home))
    yield path


def record(
    home: Path, scenario: str, when: datetime, passed: bool, run_id: str | None
) -> DrillReport:
    report = DrillReport(scenario, scenario, 18, 0.01, run_id=run_id)
    report.id = when.strftime("%Y%m%dT%H%M%S%fZ") + scenario[-1]
    report.started_at = when.isoformat()
    report.verified = passed
    report.rto_s = 12.5
    report.rpo = {"acknowledged_ticks": 10, "missing_ticks": 0, "seconds": 0.0}
    save_report(home, report)
    return report


def report(home: Path, cli_env: dict[str, str], code: int = 0) -> dict[str, object]:
    """``drill report --json``: exit 0, or 1 (and why on stderr) when the drill is overdue."""
    result = run_cli("drill", "report", "--json", env=cli_env | {"PGDR_HOME": str(home)})
    assert result.code == code, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    schedule = data["schedule"]
    assert isinstance(schedule, dict)
    if code:
        assert " ".join(result.stderr.split()) == f"error: {schedule['note']}"
    return data


def test_no_drill_yet_is_overdue(home: Path, cli_env: dict[str, str]) -> None:
    data = report(home, cli_env, code=1)
    assert data["drills"] == [] and data["last"] == {}
    assert data["schedule"] == {
        "last_full_run": None,
        "last_full_run_passed": None,
        "next_due": None,
        "overdue": True,
        "note": "No full drill has been run: run `pgdr drill run all` now.",
    }
    human = run_cli("drill", "report", env=cli_env | {"PGDR_HOME": str(home)})
    assert human.code == 1 and "No full drill has been run" in human.stdout


def test_next_quarterly_drill_after_the_last_full_run(home: Path, cli_env: dict[str, str]) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=200)
    for name in ("scenario1", "scenario2", "scenario3"):
        record(home, name, old, True, "old-run")
    recent = now - timedelta(days=30)
    for name in ("scenario1", "scenario2", "scenario3"):
        record(home, name, recent + timedelta(minutes=int(name[-1])), name != "scenario2", "new")
    single = record(home, "scenario2", now - timedelta(days=1), True, None)

    data = report(home, cli_env)
    assert len(data["drills"]) == 7  # type: ignore[arg-type]
    last = data["last"]
    assert isinstance(last, dict)
    assert last["scenario2"]["id"] == single.id and last["scenario2"]["passed"]
    assert last["scenario1"]["run_id"] is not None
    schedule = data["schedule"]
    assert isinstance(schedule, dict)
    assert schedule["last_full_run"] == (recent + timedelta(minutes=1)).isoformat()
    assert schedule["last_full_run_passed"] is False  # scenario2 failed in that run
    assert schedule["next_due"] == add_months(recent + timedelta(minutes=1), 3).isoformat()
    assert schedule["overdue"] is False


def test_overdue_after_three_months() -> None:
    last = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
    history = [
        {"scenario": f"scenario{i}", "run_id": "r", "started_at": last.isoformat(), "passed": True}
        for i in (1, 2, 3)
    ]
    due = next_scheduled(history, now=datetime(2026, 4, 15, 9, 1, tzinfo=UTC))
    assert due["next_due"] == "2026-04-15T09:00:00+00:00" and due["overdue"] is True
    assert "was due on 2026-04-15" in due["note"]
    assert not next_scheduled(history, now=datetime(2026, 4, 15, 8, 59, tzinfo=UTC))["overdue"]
    assert add_months(datetime(2026, 11, 30, tzinfo=UTC), 3) == datetime(2027, 2, 28, tzinfo=UTC)


def test_an_overdue_drill_exits_1(home: Path, cli_env: dict[str, str]) -> None:
    """Only a full run counts: a recent single drill does not make an old full run current."""
    old = datetime.now(UTC) - timedelta(days=100)
    for name in ("scenario1", "scenario2", "scenario3"):
        record(home, name, old, True, "old-run")
    record(home, "scenario1", datetime.now(UTC) - timedelta(days=1), True, None)
    data = report(home, cli_env, code=1)
    schedule = data["schedule"]
    assert isinstance(schedule, dict) and schedule["overdue"] is True
    assert schedule["note"].startswith("The quarterly drill was due on ")
