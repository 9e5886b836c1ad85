"""``pgdr drill run --random N``: random scenarios and moments, each drill held to its RPO."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import run_cli
from pgdr.drills.random_run import check_rpo, draw, plan
from pgdr.drills.report import DrillReport, Step
from pgdr.drills.workload import TICKS, LossCount, Write

SEED = 4  # draws scenario1 with the WAL streamer down (a real loss), then scenario3


def test_draws_are_replayable_and_cover_every_scenario() -> None:
    drills = plan(3, 100, max_delay_s=2.0)
    assert [d.seed for d in drills] == [100, 101, 102]
    assert drills == plan(3, 100, max_delay_s=2.0)
    assert drills[1] == draw(101, 2.0)  # `--random 1 --seed 101` replays the second drill
    many = plan(200, 7, max_delay_s=2.0)
    assert {d.scenario for d in many} == {"scenario1", "scenario2", "scenario3"}
    assert {d.inject for d in many if d.scenario == "scenario1"} == {None, "streamer-down"}
    assert all(d.inject is None for d in many if d.scenario != "scenario1")
    assert all(0 <= d.delay_s < 2.0 for d in many)
    assert [(d.scenario, d.inject) for d in plan(2, SEED, 1.0)] == [
        ("scenario1", "streamer-down"),
        ("scenario3", None),
    ]


def drilled(lost_ids: set[int], with_disaster: bool = True) -> DrillReport:
    """A report whose workload acknowledged 100 ticks 10 ms apart, the disaster at tick 80."""
    report = DrillReport("scenario1", "t", 18, 0.01)
    began = datetime.fromisoformat(report.started_at)
    ticks = [Write(TICKS, str(i), began + timedelta(seconds=1 + i / 100)) for i in range(1, 101)]
    name = "Disaster: kill" if with_disaster else "Kill"
    report.steps = [Step(name, [], started_s=1.805, duration_s=1.0, phase="")]
    lost = [t for t in ticks if int(t.key) in lost_ids]
    kept = [t for t in ticks if int(t.key) not in lost_ids]
    seconds = (max(t.committed_at for t in lost) - kept[-1].committed_at).total_seconds()
    report.loss = LossCount(100, len(lost), max(0.0, seconds), None, None, acked=ticks, lost=lost)
    report.rpo = report.loss.as_dict()
    return report


def test_a_loss_at_the_tail_is_what_the_rpo_measures() -> None:
    check = check_rpo(drilled(set(range(71, 101))))  # the last 0.1 s before and after
    assert check.checked and check.violations == 0, check.note


def test_a_commit_missing_from_before_the_rpo_is_a_violation() -> None:
    check = check_rpo(drilled({40} | set(range(91, 101))))
    assert check.checked and check.violations == 1
    assert check.oldest_violation is not None and check.bound is not None
    assert check.oldest_violation < check.bound
    assert "1 acknowledged commit(s) older than the measured RPO" in check.note


def test_without_a_disaster_or_a_count_the_rpo_is_not_checked() -> None:
    assert not check_rpo(drilled({100}, with_disaster=False)).checked
    report = DrillReport("scenario1", "t", 18, 0.01)
    assert check_rpo(report).note == "the drill did not count the workload's commits"


@pytest.mark.slow
def test_two_random_drills_under_load(cli_env: dict[str, str], pgdr_home: Path) -> None:
    result = run_cli(
        "drill", "run", "--random", "2", "--seed", str(SEED), "--max-delay", "1s",
        "--scale", "0.01", "--json", env=cli_env, timeout=900,
    )  # fmt: skip
    assert result.stdout, result.stderr
    data = json.loads(result.stdout)
    assert result.code == 0, (data, result.stderr)
    assert data["random"] and data["passed"] and data["seed"] == SEED and data["count"] == 2
    drills = data["drills"]
    assert [(d["seed"], d["scenario"], d["inject"]) for d in drills] == [
        (SEED, "scenario1", "streamer-down"),
        (SEED + 1, "scenario3", None),
    ]
    for d, drawn in zip(drills, plan(2, SEED, 1.0), strict=True):
        assert d["disaster_delay_s"] == drawn.delay_s < 1.0
        assert d["rpo_check"]["checked"] and d["rpo_check"]["violations"] == 0
        assert d["passed"] and d["drill"]["passed"]
        assert d["drill"]["facts"]["disaster_delay_s"] == drawn.delay_s
        assert d["drill"]["run_id"] is None  # not a full run for the quarterly schedule
        assert any(s["name"].startswith("Wait ") for s in d["drill"]["steps"])
        assert Path(d["html"]).is_file()
        assert Path(d["html"]).parent == pgdr_home / "records" / "drills"
    # the streamer was down: commits were lost, and all of them within the measured RPO
    assert drills[0]["missing_ticks"] > 0 and drills[0]["rpo_seconds"] > 0
    assert drills[1]["missing_ticks"] == 0


@pytest.mark.slow
def test_a_random_drill_over_its_target_fails_the_run(cli_env: dict[str, str]) -> None:
    result = run_cli(
        "drill", "run", "--random", "1", "--seed", str(SEED), "--max-delay", "0",
        "--rpo-target", "0.001s", "--scale", "0.01", "--json", env=cli_env, timeout=900,
    )  # fmt: skip
    assert result.stdout, result.stderr
    data = json.loads(result.stdout)
    assert result.code == 1, (data, result.stderr)
    (drill,) = data["drills"]
    assert not data["passed"] and not drill["passed"]
    assert drill["scenario"] == "scenario1" and drill["inject"] == "streamer-down"
    assert drill["disaster_delay_s"] == 0.0
    assert not any(s["name"].startswith("Wait ") for s in drill["drill"]["steps"])
    assert drill["rpo_check"]["checked"] and drill["rpo_check"]["violations"] == 0
    assert drill["missing_ticks"] > 0
    assert " ".join(result.stderr.split()).endswith(
        f"The random drill run (seed {SEED}) failed: 1 of 1 drill(s), first drill 1 "
        f"(scenario1, seed {SEED}): its RPO of {drill['rpo_seconds']:.3f} s is over the "
        "target of 0.001 s."
    )


def test_random_refuses_a_scenario_or_a_fault(cli_env: dict[str, str]) -> None:
    result = run_cli("drill", "run", "scenario1", "--random", "2", env=cli_env)
    assert result.code == 2 and "--random draws the scenarios" in result.stderr
    result = run_cli("drill", "run", env=cli_env)
    assert result.code == 2 and "or --random N" in result.stderr
    result = run_cli("drill", "run", "--random", "0", env=cli_env)
    assert result.code == 2
    result = run_cli("drill", "run", "scenario1", "--seed", "3", env=cli_env)
    assert result.code == 2 and "--seed goes with --random N" in result.stderr
