"""The runbook's time boxes per scenario, and a drill's measured time per phase against them.

The runbook ("Disaster Scenarios & Response") gives each step of a scenario's response a time:
scenario 1 verify the incident 5 min, contact support 5 min, point-in-time recovery 10-20 min,
verify the restoration 5 min; scenario 2 identify the corruption's scope 10 min, determine the
recovery point 5 min, selective recovery 20-30 min; scenario 3 stop further operations
(immediate), identify the deletion time 5 min, point-in-time recovery 15-20 min. Overall: RTO
1 hour, RPO 5 minutes. RUNBOOK_BOXES maps each phase of a drill (report.PHASES) to its box; a
phase the runbook gives no time for has none. A phase's measured time is the sum of its steps'
durations (phases can interleave: scenario 2 verifies the copy at T before it repairs), and for
detection at least the time from the disaster to the monitor's incident (the monitor watches
while the disaster step still runs: scenario 1's server, killed as the step begins, can be
noticed before its data directory is deleted, and the detection step then takes no time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pgdr.drills.report import PHASES

MINUTE = 60.0
PREPARATION = "preparation"  # the group of the steps without a phase
UNKNOWN = "unknown"  # a phase no version of pgdr wrote (a hand-edited record)


@dataclass(frozen=True)
class TimeBox:
    """One step of the runbook's response, the phase it maps to and the time it allows."""

    phase: str
    runbook_step: str
    max_s: float
    min_s: float | None = None  # the lower end of a range ("10-20 minutes")

    @property
    def label(self) -> str:
        low = f"{self.min_s / MINUTE:g}-" if self.min_s is not None else ""
        return f"{low}{self.max_s / MINUTE:g} min"


RUNBOOK_BOXES: dict[str, tuple[TimeBox, ...]] = {
    "scenario1": (
        TimeBox("detection", "Verify incident", 5 * MINUTE),
        TimeBox("decision", "Contact support", 5 * MINUTE),
        TimeBox("restore", "Initiate point-in-time recovery", 20 * MINUTE, 10 * MINUTE),
        TimeBox("verification", "Verify restoration", 5 * MINUTE),
    ),
    "scenario2": (
        TimeBox("detection", "Identify corruption scope", 10 * MINUTE),
        TimeBox("decision", "Determine recovery point", 5 * MINUTE),
        TimeBox("restore", "Perform selective recovery", 30 * MINUTE, 20 * MINUTE),
    ),
    "scenario3": (
        TimeBox(
            "decision",
            "Stop further operations (immediate), identify deletion time",
            5 * MINUTE,
        ),
        TimeBox("restore", "Point-in-time recovery", 20 * MINUTE, 15 * MINUTE),
    ),
}


@dataclass(frozen=True)
class PhaseTime:
    """A phase of one drill: its steps' total time, where it began, and its runbook box."""

    phase: str
    steps: int
    measured_s: float
    began_s: float | None  # seconds since the drill began; None when no step had this phase
    box: TimeBox | None

    @property
    def over_s(self) -> float | None:
        """Seconds over the box (negative: under it); None without a box or a measurement."""
        if self.box is None or self.began_s is None:
            return None
        return self.measured_s - self.box.max_s


def group_of(step: dict[str, Any]) -> str:
    """The timeline group of a recorded step: its phase, preparation, or unknown."""
    phase = step.get("phase") or ""
    if not phase:
        return PREPARATION
    return str(phase) if phase in PHASES else UNKNOWN


def disaster_step(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The step of the disaster: the first of phase "disaster" or, in a record written before
    steps had phases, the first whose name begins with "Disaster"."""
    tagged = [s for s in steps if s.get("phase") == "disaster"]
    if tagged:
        return tagged[0]
    named = [s for s in steps if str(s.get("name", "")).startswith("Disaster")]
    return named[0] if named else None


def phase_times(data: dict[str, Any]) -> list[PhaseTime]:
    """Every phase of PHASES, in order, measured from the report ``data`` against its box."""
    boxes = {b.phase: b for b in RUNBOOK_BOXES.get(str(data.get("scenario")), ())}
    out = []
    for phase in PHASES:
        steps = [s for s in data.get("steps", []) if group_of(s) == phase]
        measured = sum(seconds(s.get("duration_s")) for s in steps)
        if phase == "detection":
            measured = max(measured, detected_s(data))
        out.append(
            PhaseTime(
                phase,
                len(steps),
                measured,
                min((seconds(s.get("started_s")) for s in steps), default=None),
                boxes.get(phase),
            )
        )
    return out


def detected_s(data: dict[str, Any]) -> float:
    """Seconds from the disaster to the monitor's incident (0 when not recorded)."""
    detection = (data.get("facts") or {}).get("detection")
    return seconds(detection.get("seconds")) if isinstance(detection, dict) else 0.0


def seconds(value: Any) -> float:
    """A recorded number of seconds; 0 for a missing or unreadable one."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0
