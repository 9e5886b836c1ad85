"""Disaster drills end to end through the real ``pgdr drill`` command, on real servers.

Each drill builds its own sandbox (cluster, repository, streamer, workload), so these tests
only need the CLI environment; they check what the report claims against what happened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from pgdr.cluster import LocalCluster, find_installations
from pgdr.config import PgdrSettings as Settings


def drill(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    result = run_cli("drill", "run", *args, "--scale", "0.01", "--json", env=env, timeout=600)
    assert result.stdout, result.stderr
    return result.code, json.loads(result.stdout), result.stderr


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
    assert "pgdr restore --latest --new-cluster" in step(data, "Recover")["commands"]
    assert all(s["ok"] and s["duration_s"] >= 0 for s in data["steps"])
    assert data["rto"]["ok"] and 0 < data["rto"]["seconds"] <= 3600
    rpo = data["rpo"]
    assert rpo["acknowledged_ticks"] >= 20
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
    facts = data["facts"]
    deleted = facts["rows_deleted"]
    assert deleted["public.chatbots"] == 1 and deleted["public.messages"] > 0
    assert facts["rows_reinserted"] == deleted
    assert "pgdr readonly on --terminate" in step(data, "Stop further writes")["commands"]
    assert any("--with-children" in c for c in step(data, "Re-insert")["commands"])
    # the workload kept everything it was told was committed; it wrote again afterwards
    assert data["rpo"]["missing_ticks"] == 0 and data["rpo"]["seconds"] == 0
    assert_cleaned_up(data, pgdr_home)


@pytest.mark.slow
def test_scenario2_corruption_repaired_from_a_copy_at_t(
    cli_env: dict[str, str], pgdr_home: Path
) -> None:
    code, data, stderr = drill(cli_env, "scenario2")
    assert code == 0, (data["issues"], stderr)
    assert data["passed"]
    assert data["facts"]["incident_severity"] == "P0"  # 25 % of the vectors lost
    assert any("reference a missing public.users" in f for f in data["findings"])
    facts = data["facts"]
    assert facts["damaged_tables"] == ["public.embeddings", "public.users"]
    assert facts["choice"].startswith("Option B")
    # option A was verified too, and its corruption window counted
    window = facts["option_a"]["corruption_window"]
    assert window["missing_ticks"] > 0 and window["seconds"] > 0
    assert facts["rows_repaired"]["public.users"] >= 1
    assert facts["rows_repaired"]["public.embeddings"] >= 1
    assert data["rpo"]["missing_ticks"] == 0  # production kept everything written after T
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
    assert any("acknowledged commit(s) missing" in f for f in data["findings"])

    # --keep: the recovered server is still there to look at, until `drill clean`
    assert data["kept"]
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
