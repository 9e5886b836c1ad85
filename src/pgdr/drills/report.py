"""The drill report, its record in ``$PGDR_HOME/records/drills`` and the quarterly schedule.

A report lists the steps with their durations and the commands an operator would type for each,
RTO and RPO measured against the runbook's targets (RTO 1 hour, RPO 5 minutes), findings and
issues. Records live outside the protected database, like every pgdr record. The runbook asks
for a test every quarter: the next one is due three months after the last full run
(``pgdr drill run all``) and is flagged when overdue.
"""

from __future__ import annotations

import calendar
import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgdr.core.errors import ConfigError
from pgdr.core.log import logger
from pgdr.core.records import RecordStore, new_record_id
from pgdr.drills.workload import LossCount

log = logger(__name__)

RTO_TARGET_S = 3600.0  # the runbook: RTO 1 hour
RPO_TARGET_S = 300.0  # the runbook: RPO 5 minutes
QUARTER_MONTHS = 3
KIND = "drill"

# The phases of an incident's timeline, in order. A step names the phase it belongs to ("" for
# the preparation before the disaster); the HTML report draws them against the runbook's boxes.
PHASES = ("disaster", "detection", "decision", "restore", "verification")


@dataclass
class Step:
    name: str
    commands: list[str]
    started_s: float  # seconds since the drill began
    duration_s: float = 0.0
    ok: bool = True
    detail: str = ""
    phase: str = ""  # one of PHASES, or "" for preparation

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_s"] = round(self.started_s, 3)
        data["duration_s"] = round(self.duration_s, 3)
        return data


@dataclass
class DrillReport:
    scenario: str
    title: str
    pg_version: int
    scale: float
    id: str = field(default_factory=new_record_id)
    run_id: str | None = None  # shared by the drills of one ``drill run all``
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished_at: str | None = None
    steps: list[Step] = field(default_factory=list)
    rto_s: float | None = None
    rpo: dict[str, Any] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    verified: bool = False
    sandbox: str | None = None
    kept: bool = False
    rto_target_s: float = RTO_TARGET_S
    rpo_target_s: float = RPO_TARGET_S
    listener: Callable[[str], None] | None = field(default=None, repr=False)
    loss: LossCount | None = field(default=None, repr=False)  # the RPO's ticks, not recorded
    _began: float = field(default_factory=time.monotonic, repr=False)

    @contextmanager
    def step(self, name: str, *commands: str, phase: str = "") -> Iterator[Step]:
        """Time one step (of ``phase``, one of PHASES); a failure marks it and propagates."""
        if phase and phase not in PHASES:
            raise ValueError(f"unknown drill phase {phase!r}")
        current = Step(name, list(commands), time.monotonic() - self._began, phase=phase)
        log.info("Drill %s: %s", self.scenario, name)
        if self.listener is not None:
            self.listener(name)
        self.steps.append(current)
        began = time.monotonic()
        try:
            yield current
        except BaseException as exc:
            current.ok = False
            current.detail = current.detail or str(getattr(exc, "message", exc))
            log.warning("Drill %s: %s failed: %s", self.scenario, name, current.detail)
            raise
        finally:
            current.duration_s = time.monotonic() - began

    @property
    def rpo_s(self) -> float | None:
        value = self.rpo.get("seconds")
        return None if value is None else float(value)

    @property
    def rto_ok(self) -> bool:
        return self.rto_s is not None and self.rto_s <= self.rto_target_s

    @property
    def rpo_ok(self) -> bool:
        return self.rpo_s is not None and self.rpo_s <= self.rpo_target_s

    @property
    def passed(self) -> bool:
        return (
            self.verified
            and self.rto_ok
            and self.rpo_ok
            and all(s.ok for s in self.steps)
            and not self.issues
        )

    def fail(self, step: Step, message: str) -> None:
        """A verification that found something wrong: the step fails, the drill goes on."""
        step.ok = False
        step.detail = message
        self.issues.append(f"{step.name}: {message}")

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._began

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "id": self.id,
            "run_id": self.run_id,
            "scenario": self.scenario,
            "title": self.title,
            "pg_version": self.pg_version,
            "scale": self.scale,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "steps": [s.as_dict() for s in self.steps],
            "rto": {
                "seconds": None if self.rto_s is None else round(self.rto_s, 3),
                "target_seconds": self.rto_target_s,
                "ok": self.rto_ok,
            },
            "rpo": self.rpo | {"target_seconds": self.rpo_target_s, "ok": self.rpo_ok},
            "verified": self.verified,
            "passed": self.passed,
            "findings": self.findings,
            "issues": self.issues,
            "facts": self.facts,
            "sandbox": self.sandbox,
            "kept": self.kept,
        }


def store(home: Path) -> RecordStore:
    return RecordStore(home, KIND)


def save_report(home: Path, report: DrillReport) -> Path:
    data = report.as_dict()
    return store(home).save(data)


def drill_history(home: Path) -> list[dict[str, Any]]:
    """Every recorded drill, oldest first (unreadable files are skipped)."""
    records = store(home)
    out = []
    for record_id in records.ids():
        with contextlib.suppress(ConfigError):  # a damaged record must not hide the others
            out.append(records.load(record_id)[0])
    return out


def add_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    year = moment.year + month // 12
    month = month % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def full_runs(history: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Drills grouped by the ``drill run all`` that ran them."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for data in history:
        if data.get("run_id"):
            runs.setdefault(str(data["run_id"]), []).append(data)
    return runs


def next_scheduled(history: list[dict[str, Any]], now: datetime | None = None) -> dict[str, Any]:
    """The runbook's quarterly test: three months after the last full run, overdue after."""
    now = now or datetime.now(UTC)
    runs = full_runs(history)
    last: datetime | None = None
    last_passed: bool | None = None
    for drills in runs.values():
        began = min(datetime.fromisoformat(d["started_at"]) for d in drills)
        if last is None or began > last:
            last = began
            last_passed = all(d.get("passed") for d in drills) and len(drills) >= 3
    if last is None:
        return {
            "last_full_run": None,
            "last_full_run_passed": None,
            "next_due": None,
            "overdue": True,
            "note": "No full drill has been run: run `pgdr drill run all` now.",
        }
    due = add_months(last, QUARTER_MONTHS)
    overdue = now > due
    return {
        "last_full_run": last.isoformat(),
        "last_full_run_passed": last_passed,
        "next_due": due.isoformat(),
        "overdue": overdue,
        "note": (
            f"The quarterly drill was due on {due.date()}: run `pgdr drill run all`."
            if overdue
            else f"Next quarterly drill due on {due.date()}."
        ),
    }


def last_per_scenario(history: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for data in history:
        last[str(data["scenario"])] = data
    return last
