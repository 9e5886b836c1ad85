"""``pgdr drill run --random N``: drills with random scenarios and moments, their RPO checked.

Drill ``i`` (from 0) of a run with seed ``S`` draws from its own seed ``S + i``: a scenario out
of the three, for scenario 1 whether the WAL streamer also goes down (``--inject
streamer-down``, a real loss to measure), and a delay under load before the disaster, uniform
in ``[0, max_delay_s)``. ``--random 1 --seed S+i`` replays exactly that draw.

Every drill is also held to the RPO it measured: the workload's acknowledged commits missing
after the recovery must all be younger than ``disaster - RPO``. The disaster is taken on the
workload's own clock (the newest acknowledged commit made before the disaster step began), so
a loss at the tail, which the RPO measures, is never a violation; a commit missing from before
that (a hole the RPO did not count) is. A drill whose RPO could not be checked fails, like a
drill that failed on its own.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pgdr.config import PgdrSettings
from pgdr.core.time import to_datetime
from pgdr.drills.detect import MonitorFactory
from pgdr.drills.html import html_path
from pgdr.drills.report import DrillReport
from pgdr.drills.scenarios import FAULTS, SCENARIOS, DrillOptions, run_drill
from pgdr.drills.timebox import disaster_step

MAX_DELAY_S = 10.0


@dataclass(frozen=True)
class RandomDrill:
    """One draw: the seed it came from, the scenario, the fault and the delay."""

    seed: int
    scenario: str
    inject: str | None
    delay_s: float


def new_seed() -> int:
    return secrets.randbelow(2**31)


def draw(seed: int, max_delay_s: float = MAX_DELAY_S) -> RandomDrill:
    rng = random.Random(seed)  # noqa: S311 (a replayable draw, not a secret)
    scenario = rng.choice(sorted(SCENARIOS))
    inject = rng.choice((None, *FAULTS)) if scenario == "scenario1" else None
    return RandomDrill(seed, scenario, inject, round(rng.uniform(0.0, max_delay_s), 3))


def plan(count: int, seed: int, max_delay_s: float = MAX_DELAY_S) -> list[RandomDrill]:
    """The ``count`` drills of a run with ``seed``: drill i draws from ``seed + i``."""
    return [draw(seed + i, max_delay_s) for i in range(count)]


@dataclass(frozen=True)
class RpoCheck:
    """Acknowledged commits missing from before ``disaster - RPO``: none, or a violation."""

    checked: bool
    violations: int = 0
    bound: str | None = None  # every acknowledged commit before this moment must be there
    oldest_violation: str | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "violations": self.violations,
            "bound": self.bound,
            "oldest_violation": self.oldest_violation,
            "note": self.note,
        }


def disaster_moment(report: DrillReport) -> datetime | None:
    """When the disaster step began, in wall-clock time; None without one."""
    step = disaster_step([s.as_dict() for s in report.steps])
    if step is None:
        return None
    return to_datetime(report.started_at) + timedelta(seconds=float(step["started_s"]))


def check_rpo(report: DrillReport) -> RpoCheck:
    """The drill's missing acknowledged commits against its measured RPO."""
    loss, disaster, rpo_s = report.loss, disaster_moment(report), report.rpo_s
    if loss is None or rpo_s is None:
        return RpoCheck(False, note="the drill did not count the workload's commits")
    if disaster is None:
        return RpoCheck(False, note="the drill recorded no disaster step")
    before = [t.committed_at for t in loss.acked if t.committed_at <= disaster]
    bound = max(before, default=disaster) - timedelta(seconds=rpo_s)
    older = sorted(t.committed_at for t in loss.lost if t.committed_at < bound)
    note = (
        f"{len(older)} acknowledged commit(s) older than the measured RPO of {rpo_s:.3f} s are "
        "missing"
        if older
        else f"every acknowledged commit older than the measured RPO of {rpo_s:.3f} s is there"
    )
    return RpoCheck(
        True, len(older), bound.isoformat(), older[0].isoformat() if older else None, note
    )


@dataclass(frozen=True)
class RandomResult:
    index: int  # 1-based
    drill: RandomDrill
    report: DrillReport
    rpo_check: RpoCheck
    html: Path

    @property
    def passed(self) -> bool:
        return self.report.passed and self.rpo_check.checked and not self.rpo_check.violations

    def why(self) -> str:
        """Why this drill failed, as a clause."""
        where = f"drill {self.index} ({self.drill.scenario}, seed {self.drill.seed})"
        r = self.report
        if self.rpo_check.violations or not self.rpo_check.checked:
            reason = self.rpo_check.note
        elif r.issues:
            reason = r.issues[0]
        elif not r.rpo_ok:
            reason = f"its RPO of {r.rpo_s or 0:.3f} s is over the target of {r.rpo_target_s:g} s"
        elif not r.rto_ok:
            reason = f"its RTO of {r.rto_s or 0:.1f} s is over the target of {r.rto_target_s:g} s"
        else:
            reason = "a step failed (see its report)"
        return f"{where}: {reason}"

    def as_dict(self) -> dict[str, Any]:
        rpo = self.report.rpo
        return {
            "index": self.index,
            "seed": self.drill.seed,
            "scenario": self.drill.scenario,
            "inject": self.drill.inject,
            "disaster_delay_s": self.drill.delay_s,
            "rpo_seconds": rpo.get("seconds"),
            "missing_ticks": rpo.get("missing_ticks"),
            "acknowledged_ticks": rpo.get("acknowledged_ticks"),
            "rpo_check": self.rpo_check.as_dict(),
            "passed": self.passed,
            "html": str(self.html),
            "drill": self.report.as_dict(),
        }


def run_random_drill(
    index: int,
    drawn: RandomDrill,
    settings: PgdrSettings,
    options: DrillOptions,
    monitor: MonitorFactory,
    on_step: Callable[[str], None] | None = None,
) -> RandomResult:
    """Run one drawn drill (``options`` give scale, version, targets) and check its RPO;
    ``monitor`` as for :func:`run_drill`."""
    chosen = replace(options, inject=drawn.inject, disaster_delay_s=drawn.delay_s, run_id=None)
    report = run_drill(drawn.scenario, settings, chosen, on_step, monitor)
    return RandomResult(
        index, drawn, report, check_rpo(report), html_path(settings.home, report.id)
    )


@dataclass(frozen=True)
class RandomRun:
    seed: int
    count: int
    results: list[RandomResult]

    @property
    def passed(self) -> bool:
        return len(self.results) == self.count and all(r.passed for r in self.results)

    def failure(self) -> str:
        """One sentence: how many drills failed, and why the first did."""
        failed = [r for r in self.results if not r.passed]
        if not failed:
            return f"Only {len(self.results)} of {self.count} random drill(s) ran."
        return (
            f"The random drill run (seed {self.seed}) failed: {len(failed)} of {self.count} "
            f"drill(s), first {failed[0].why()}."
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "random": True,
            "seed": self.seed,
            "count": self.count,
            "passed": self.passed,
            "drills": [r.as_dict() for r in self.results],
        }
