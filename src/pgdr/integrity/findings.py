"""Findings, severities and the runbook's P0–P3 priorities; the report every check returns.

A finding is one thing wrong (or worth knowing) about the database: which check found it, how
severe it is, how many rows it touches and a few sample keys. Severities map onto the runbook's
incident levels: a critical finding touching more than 10% of a table's rows is P0, any other
critical finding P1, a warning P2 and an info P3 (a finding may name its level outright, e.g. a
damaged relation is P0 whatever its size).

A report is never a pass when something was not checked: every :class:`Skipped` entry (unless it
is marked ``incomplete=False``, like sample keys that could not be fetched for a finding that is
already counted) makes the report ``incomplete``, its status "incomplete" and its exit code 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pgdr.core.severity import FINDING_LEVELS, FindingLevel, Severity, priority

REPORT_VERSION = 1


def iso(value: Any) -> str | None:
    """A timestamp (or any other newest value) as JSON-friendly text."""
    if value is None:
        return None
    return str(value.isoformat()) if hasattr(value, "isoformat") else str(value)


@dataclass
class Finding:
    """One problem: ``count`` of ``rows`` in ``table`` (when it is about rows)."""

    check: str
    code: str
    severity: FindingLevel
    message: str
    table: str | None = None
    name: str | None = None
    count: int | None = None
    rows: int | None = None
    samples: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    level: Severity | None = None  # an explicit P-level instead of the one the size gives

    @property
    def fraction(self) -> float | None:
        if self.count is None or not self.rows:
            return None
        return self.count / self.rows

    @property
    def priority(self) -> Severity:
        return self.level or priority(self.severity, self.fraction)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["level"]
        fraction = self.fraction
        data["fraction"] = None if fraction is None else round(fraction, 6)
        data["priority"] = self.priority
        return data


@dataclass
class Skipped:
    """A check that did not run (or ran partly), and the sentence saying why.

    ``partial``: a table was only partly checked (timeout, lock). ``incomplete``: this gap keeps
    the run from being a pass (everything except extras such as sample keys).
    """

    check: str
    reason: str
    table: str | None = None
    partial: bool = False
    incomplete: bool = True


@dataclass
class Report:
    """What a run of checks found; ``as_dict`` is the documented ``--json`` shape."""

    kind: str
    database: str
    profile: str | None
    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def skip(
        self,
        check: str,
        reason: str,
        table: str | None = None,
        partial: bool = False,
        incomplete: bool = True,
    ) -> None:
        self.skipped.append(Skipped(check, reason, table, partial, incomplete))

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for f in self.findings if f.severity == s) for s in FINDING_LEVELS}

    @property
    def critical(self) -> int:
        return self.counts()["critical"]

    @property
    def partial(self) -> bool:
        return any(s.partial for s in self.skipped)

    @property
    def incomplete(self) -> bool:
        """Something was not checked: the run is not a pass, whatever it found."""
        return any(s.incomplete for s in self.skipped)

    @property
    def status(self) -> str:
        if self.critical:
            return "failed"
        return "incomplete" if self.incomplete else "ok"

    @property
    def top_priority(self) -> Severity | None:
        levels = sorted(f.priority for f in self.findings)
        return levels[0] if levels else None

    def ordered(self) -> list[Finding]:
        rank = {s: i for i, s in enumerate(FINDING_LEVELS)}
        return sorted(
            self.findings,
            key=lambda f: (f.priority, rank[f.severity], f.check, f.table or "", f.name or ""),
        )

    def as_dict(self) -> dict[str, Any]:
        counts = self.counts()
        return {
            "version": REPORT_VERSION,
            "kind": self.kind,
            "database": self.database,
            "profile": self.profile,
            "status": self.status,
            "summary": {
                **counts,
                "priority": self.top_priority,
                "partial": self.partial,
                "incomplete": self.incomplete,
                "not_checked": [s.reason for s in self.skipped if s.incomplete],
            },
            "findings": [f.as_dict() for f in self.ordered()],
            "skipped": [asdict(s) for s in self.skipped],
            "notes": list(self.notes),
            **self.sections,
            "duration_s": round(self.duration_s, 3),
        }
