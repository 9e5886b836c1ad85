"""pgdr's one severity scale: the runbook's P0–P3, with definitions and target times.

Every severity pgdr reports — a monitor check, an incident, an integrity finding — is a
:class:`Severity`. A finding's ``critical``/``warning``/``info`` (what a profile author writes) is
a :data:`FindingLevel`, a coarser *view* of the same scale: :func:`priority` maps it onto P0–P3
(a critical finding touching more than 10% of a table's rows is P0, any other critical finding
P1, a warning P2 and an info P3). There is no second severity type.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Literal

FindingLevel = Literal["critical", "warning", "info"]
"""How a profile rule or a check grades a finding; :func:`priority` places it on P0–P3."""

FINDING_LEVELS: tuple[FindingLevel, ...] = ("critical", "warning", "info")
P0_FRACTION = 0.10


class Severity(StrEnum):
    """A runbook priority: P0 (critical, 1 hour) to P3 (low, 1 week)."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"

    @property
    def rank(self) -> int:
        return int(self.value[1])


@dataclass(frozen=True)
class SeverityLevel:
    severity: Severity
    name: str
    rto: timedelta
    examples: tuple[str, ...]
    needs_review: bool


SEVERITY_LEVELS: dict[Severity, SeverityLevel] = {
    Severity.P0: SeverityLevel(
        Severity.P0,
        "Critical",
        timedelta(hours=1),
        ("Complete database outage", "Data corruption affecting > 10% of data", "Security breach"),
        needs_review=True,
    ),
    Severity.P1: SeverityLevel(
        Severity.P1,
        "High",
        timedelta(hours=4),
        (
            "Degraded database performance (> 2s query times)",
            "Backup failure",
            "Connection pool exhaustion",
        ),
        needs_review=True,
    ),
    Severity.P2: SeverityLevel(
        Severity.P2,
        "Medium",
        timedelta(days=1),
        (
            "Slow queries affecting specific features",
            "Missing indexes",
            "Minor data inconsistencies",
        ),
        needs_review=False,
    ),
    Severity.P3: SeverityLevel(
        Severity.P3,
        "Low",
        timedelta(weeks=1),
        ("Optimization opportunities", "Schema improvements", "Documentation updates"),
        needs_review=False,
    ),
}


def worst(severities: list[Severity]) -> Severity | None:
    """The most severe of ``severities`` (P0 is worst), or None for an empty list."""
    return min(severities, key=lambda s: s.rank) if severities else None


def describe(severity: str) -> str:
    """``P1 (High, RTO 4 h)``: how a message names a severity."""
    level = SEVERITY_LEVELS[Severity(severity)]
    return f"{level.severity.value} ({level.name}, RTO {level.rto.total_seconds() / 3600:g} h)"


def priority(level: FindingLevel, fraction: float | None) -> Severity:
    """The P0–P3 of a finding: its level, and for critical ones the share of rows affected."""
    if level == "critical":
        return Severity.P0 if fraction is not None and fraction > P0_FRACTION else Severity.P1
    return Severity.P2 if level == "warning" else Severity.P3
