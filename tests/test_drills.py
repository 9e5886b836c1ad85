"""Disaster drills end to end through the real ``pgdr drill`` command, on real servers.

Each drill builds its own sandbox (cluster, repository, streamer, workload), so these tests
only need the CLI environment; they check what the report claims against what happened.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from pgdr.cluster import LocalCluster, find_installations
from pgdr.config import PgdrSettings as Settings
from pgdr.drills.report import PHASES


def drill(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    result = run_cli(
        "drill",
        "run",
        *args,
        "--scale",
        "0.01",
        "--monitor-interval",
        "1s",
        "--json",
        env=env,
        timeout=600,
    )
    assert result.stdout, result.stderr
    return result.code, json.loads(result.stdout), result.stderr


def assert_measured_incident(data: dict[str, Any], check: str, action: str) -> None:
    """Detection came from pgdr's monitor (an incident it opened, timed from the disaster),
    the decision from that incident, and RTO covers every phase of the timeline."""
    detection = data["facts"]["detection"]
    assert check in [o["check"] for o in detection["opened"]], detection
    assert 0 < detection["seconds"] < 30
    assert detection["last_clean_round"] < detection["first_failing_round"][0]
    assert step(data, "Detect")["phase"] == "detection"
    assert data["facts"]["decision"]["action"] == action
    phases = data["facts"]["phases"]
    assert set(phases) == set(PHASES), phases
    # deciding is computation (milliseconds); every other phase takes measurable time
    assert all(phases[p] > 0 for p in PHASES if p != "decision"), phases
    assert phases["decision"] >= 0, phases
    # RTO runs from the disaster's moment (s2, s3: its commit, at the end of its step)
    assert sum(phases.values()) - phases["disaster"] <= data["rto"]["seconds"] + 0.5
    assert data["rto"]["seconds"] >= detection["seconds"]
    prepared = [s for s in data["steps"] if not s["phase"]]
    assert prepared and prepared[0]["name"].startswith("Prepare")


def damaged_writes(data: dict[str, Any], *tables: str) -> dict[str, dict[str, int]]:
    """The workload's acknowledged writes on the tables the disaster damaged."""
    counted = data["rpo"]["tables"]
    assert all(counted[t]["acknowledged"] > 0 for t in tables), counted
    return {t: counted[t] for t in tables}


def assert_cleaned_up(data: dict[str, Any], home: Path) -> None:
    assert data["sandbox"] and not Path(data["sandbox"]).exists()
    record = home / "records" / "drills" / f"{data['id']}.json"
    assert json.loads(record.read_text())["passed"] == data["passed"]


def step(data: dict[str, Any], words: str) -> dict[str, Any]:
    found = [s for s in data["steps"] if s["name"].startswith(words)]
    assert found, [s["name"] for s in data["steps"]]
    return found[0]


@pytest.mark.slow
@pytest.mark.parametrize("major", [18, pytest.param(15, marks=pytest.mark.pg15)])
def test_scenario1_complete_loss(cli_env: dict[str, str], pgdr_home: Path, major: int) -> None:
    if not any(i.major == major for i in find_installations()):
        pytest.skip(f"PostgreSQL {major} is not installed")
    code, data, stderr = drill(cli_env, "scenario1", "--pg-version", str(major))
    assert code == 0, (data["issues"], stderr)
    assert data["passed"] and data["verified"] and not data["issues"]
    assert data["pg_version"] == major
    assert data["facts"]["incident_severity"] == "P0"
    assert_measured_incident(data, "database_up", "restore-latest")
    assert data["facts"]["recovery_point"]["target"] == "--latest"
    assert "pgdr restore --latest --new-cluster" in step(data, "Recover")["commands"]
    assert all(s["ok"] and s["duration_s"] >= 0 for s in data["steps"])
    assert data["rto"]["ok"] and 0 < data["rto"]["seconds"] <= 3600
    rpo = data["rpo"]
    assert rpo["acknowledged_ticks"] >= 20
    damaged_writes(data, "public.messages", "public.conversations", "public.users")
    assert rpo["ok"] and rpo["seconds"] <= 300
    assert rpo["missing_ticks"] <= rpo["acknowledged_ticks"] // 2
    assert_cleaned_up(data, pgdr_home)


@pytest.mark.slow
def test_scenario3_deleted_chatbot_comes_back_exactly(
    cli_env: dict[str, str], pgdr_home: Path
) -> None:
    code, data, stderr = drill(cli_env, "scenario3")
    assert code == 0, (data["issues"], stderr)
    assert data["passed"]
    detection = data["facts"]["detection"]
    assert_measured_incident(data, "rows_fell", "undelete")
    facts = data["facts"]
    # pgdr found the deleting transaction in the WAL; the harness handed nothing in
    point = facts["recovery_point"]
    assert point["target"] == f"--target-xid {point['xid']} --exclusive"
    assert point["rows_deleted"] == 1 and point["window"][0] == detection["last_clean_round"]
    assert any(f"--target-xid {point['xid']}" in c for c in step(data, "Restore")["commands"])
    assert facts["keys_put_back"] == [facts["chatbot"]]
    deleted = facts["rows_deleted"]
    assert deleted["public.chatbots"] == 1 and deleted["public.messages"] > 0
    assert {t: n for t, n in facts["rows_reinserted"].items() if n} == deleted
    assert "pgdr readonly on --terminate" in step(data, "Stop further writes")["commands"]
    assert any("--with-children" in c for c in step(data, "Re-insert")["commands"])
    # the workload wrote under the chatbots too (the deleted one included): every write it
    # was told was committed is there again; it wrote again afterwards
    writes = damaged_writes(data, "public.messages", "public.conversations")
    assert all(n["missing"] == 0 for n in writes.values())
    assert data["rpo"]["missing_writes"] == 0 and data["rpo"]["seconds"] == 0
    assert_cleaned_up(data, pgdr_home)


@pytest.mark.slow
def test_scenario2_corruption_repaired_from_a_copy_before_it(
    cli_env: dict[str, str], pgdr_home: Path
) -> None:
    code, data, stderr = drill(cli_env, "scenario2")
    assert code == 0, (data["issues"], stderr)
    assert data["passed"]
    assert data["facts"]["incident_severity"] == "P0"  # 25 % of the vectors lost
    assert_measured_incident(data, "integrity", "repair-tables")
    assert any("reference a missing public.users" in f for f in data["findings"])
    facts = data["facts"]
    assert facts["damaged_tables"] == ["public.embeddings", "public.users"]
    # the recovery point: wal find on the damaged tables in the window of the monitor's rounds
    point = facts["recovery_point"]
    assert point["window"] == [
        facts["detection"]["last_clean_round"],
        facts["detection"]["first_failing_round"][1],
    ]
    assert point["transactions"] == {
        "public.embeddings": {"xid": point["xid"], "op": "update"},
        "public.users": {"xid": point["xid"], "op": "delete"},
    }
    assert point["target"] == f"--target-xid {point['xid']} --exclusive"
    assert step(data, "Find the recovery point")["phase"] == "decision"
    assert facts["choice"].startswith("Option B")
    # option A was verified too, and its corruption window counted
    window = facts["option_a"]["corruption_window"]
    assert window["missing_writes"] > 0 and window["seconds"] > 0
    assert facts["rows_repaired"]["public.users"] >= 1
    assert facts["rows_repaired"]["public.embeddings"] >= 1
    # the workload wrote the damaged tables; the repair put the users back as they were
    # before the corruption, so their updates since are reverted: that is data loss
    writes = damaged_writes(data, "public.embeddings", "public.users")
    assert writes["public.users"]["missing"] > 0 and writes["public.embeddings"]["missing"] == 0
    assert data["rpo"]["missing_ticks"] == 0  # production kept everything else
    assert 0 < data["rpo"]["seconds"] <= data["rto"]["seconds"] and data["rpo"]["ok"]
    assert_cleaned_up(data, pgdr_home)


@pytest.mark.slow
def test_a_failing_drill_reports_failure_and_exits_1(
    cli_env: dict[str, str], pgdr_home: Path
) -> None:
    """The WAL streamer is down before the disaster: acknowledged commits are lost, and with
    an RPO target below that loss the drill fails, says why, and still cleans up."""
    code, data, stderr = drill(
        cli_env, "scenario1", "--inject", "streamer-down", "--rpo-target", "0.001s", "--keep"
    )
    assert code == 1, stderr
    assert "The drill failed: scenario1" in " ".join(stderr.split())
    assert not data["passed"]
    assert data["rpo"]["missing_ticks"] > 0 and not data["rpo"]["ok"]
    assert data["rto"]["ok"]  # the recovery itself worked
    assert any("acknowledged write(s) missing" in f for f in data["findings"])

    # --keep: the recovered server is still there to look at, until `drill clean`; so is
    # the incident pgdr's monitor opened in the sandbox's own store
    assert data["kept"]
    detection = data["facts"]["detection"]
    records = Path(data["sandbox"]) / "records" / "incidents"
    incident = json.loads((records / f"{detection['incident_id']}.json").read_text())
    assert incident["check"] == "database_up" and incident["source"] == "monitor"
    disaster = datetime.fromisoformat(data["facts"]["disaster_at"]).timestamp()
    assert abs(incident["opened_at"] - disaster - detection["seconds"]) < 0.5
    recovered = LocalCluster(
        Path(data["sandbox"]) / "clusters" / "recovered", Settings(home=pgdr_home)
    )
    assert recovered.status().running
    cleaned = run_cli("drill", "clean", data["id"], "--json", env=cli_env)
    assert cleaned.code == 0, cleaned.stderr
    assert json.loads(cleaned.stdout) == {"removed": [data["id"]]}
    assert not recovered.status().running
    assert_cleaned_up(data, pgdr_home)


def test_unknown_scenario_is_a_usage_error(cli_env: dict[str, str]) -> None:
    result = run_cli("drill", "run", "scenario9", env=cli_env)
    assert result.code == 2
    assert "Unknown drill 'scenario9'" in result.stderr
    result = run_cli("drill", "run", "scenario1", "--pg-version", "9", env=cli_env)
    assert result.code == 2
    assert "PostgreSQL 9 is not installed" in result.stderr
    result = run_cli("drill", "run", "scenario1", "--inject", "nope", env=cli_env)
    assert result.code == 2 and "Unknown fault 'nope'" in result.stderr
    result = run_cli("drill", "run", "all", "--inject", "streamer-down", env=cli_env)
    assert result.code == 2 and "scenario1 only" in result.stderr
