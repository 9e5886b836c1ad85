"""The runbook's severity levels (P0-P3), with their recovery-time objectives."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


class Severity(StrEnum):
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
