"""Incidents: opened when a check fails, resolved when it passes again, kept as JSON files.

One open incident per check at a time; its severity is raised if the failure gets worse. P0
and P1 incidents carry the runbook's post-incident review checklist until someone records it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgdr.core.records import write_json
from pgdr.core.severity import SEVERITY_LEVELS, Severity
from pgdr.monitoring.checks import CheckResult

REVIEW_STEPS = (
    "Document what happened",
    "Identify root cause",
    "Implement preventive measures",
    "Update runbooks",
    "Conduct team retrospective",
)


@dataclass
class Incident:
    id: str
    check: str
    severity: str
    opened_at: float
    message: str
    resolved_at: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    review_required: bool = False
    review_steps: list[str] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["open"] = self.open
        data["rto_seconds"] = SEVERITY_LEVELS[Severity(self.severity)].rto.total_seconds()
        return data


class IncidentLog:
    """Incident records in a directory (``$PGDR_HOME/records/incidents``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, incident_id: str) -> Path:
        return self.directory / f"{incident_id}.json"

    def _save(self, incident: Incident) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # 0600: an incident may quote the text of a long-running query
        write_json(self._path(incident.id), asdict(incident), force=True)

    def all(self) -> list[Incident]:
        if not self.directory.is_dir():
            return []
        incidents = [Incident(**json.loads(p.read_text())) for p in self.directory.glob("*.json")]
        return sorted(incidents, key=lambda i: i.opened_at, reverse=True)

    def open_incidents(self) -> list[Incident]:
        return [i for i in self.all() if i.open]

    def update(self, results: list[CheckResult], now: float | None = None) -> list[Incident]:
        """Open, escalate or resolve incidents from one round of checks; returns the changed."""
        now = now or time.time()
        current = {i.check: i for i in self.open_incidents()}
        changed: list[Incident] = []
        for result in results:
            incident = current.get(result.name)
            if result.skipped:
                continue
            if not result.ok and result.severity is not None:
                if incident is None:
                    incident = self._open(result, now)
                elif Severity(incident.severity).rank > result.severity.rank:
                    incident.severity = result.severity.value
                    incident.events.append(
                        {"at": now, "event": "escalated", "message": result.message}
                    )
                else:
                    continue
                self._review_if_needed(incident)
                self._save(incident)
                changed.append(incident)
            elif result.ok and incident is not None:
                incident.resolved_at = now
                incident.events.append({"at": now, "event": "resolved", "message": result.message})
                self._save(incident)
                changed.append(incident)
        return changed

    def _open(self, result: CheckResult, now: float) -> Incident:
        assert result.severity is not None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        return Incident(
            id=f"{stamp}-{result.name}-{uuid.uuid4().hex[:6]}",
            check=result.name,
            severity=result.severity.value,
            opened_at=now,
            message=result.message,
            events=[{"at": now, "event": "opened", "message": result.message}],
        )

    @staticmethod
    def _review_if_needed(incident: Incident) -> None:
        if SEVERITY_LEVELS[Severity(incident.severity)].needs_review:
            incident.review_required = True
            incident.review_steps = list(REVIEW_STEPS)
