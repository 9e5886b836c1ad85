"""Incident records: what is (or was) wrong, how severe on the P0–P3 scale, and what happened.

Any package may open or resolve an incident — the monitor for a failing check
(``pgdr.monitoring.IncidentLog``), the WAL streamer when it degrades synchronous commits — and
``pgdr monitor incidents`` shows them all, because they share this one store:
``$PGDR_HOME/records/incidents/<id>.json`` (:class:`~pgdr.core.records.RecordStore`: atomic,
0600). One open incident per check at a time; P0 and P1 incidents carry the runbook's
post-incident review checklist.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgdr.core.records import RecordStore, read_json
from pgdr.core.severity import SEVERITY_LEVELS, Severity

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

    def escalate(self, severity: Severity, message: str, now: float) -> None:
        self.severity = severity.value
        self.events.append({"at": now, "event": "escalated", "message": message})
        self.require_review_if_needed()

    def resolve(self, message: str, now: float) -> None:
        self.resolved_at = now
        self.events.append({"at": now, "event": "resolved", "message": message})

    def require_review_if_needed(self) -> None:
        if SEVERITY_LEVELS[Severity(self.severity)].needs_review:
            self.review_required = True
            self.review_steps = list(REVIEW_STEPS)


def new_incident(check: str, severity: Severity, message: str, now: float) -> Incident:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    incident = Incident(
        id=f"{stamp}-{check}-{uuid.uuid4().hex[:6]}",
        check=check,
        severity=severity.value,
        opened_at=now,
        message=message,
        events=[{"at": now, "event": "opened", "message": message}],
    )
    incident.require_review_if_needed()
    return incident


class IncidentStore:
    """Incident records in a directory (``$PGDR_HOME/records/incidents`` by default)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._records = RecordStore.at(directory, "incident")

    @classmethod
    def at_home(cls, home: Path) -> IncidentStore:
        return cls(RecordStore(home, "incident").directory)

    def save(self, incident: Incident) -> None:
        self._records.put(incident.id, asdict(incident))

    def all(self) -> list[Incident]:
        incidents = [
            Incident(**read_json(self._records.path(i), "incident")) for i in self._records.ids()
        ]
        return sorted(incidents, key=lambda i: i.opened_at, reverse=True)

    def open_incidents(self) -> list[Incident]:
        return [i for i in self.all() if i.open]

    def current(self, check: str) -> Incident | None:
        """The open incident of ``check``, if any."""
        return next((i for i in self.open_incidents() if i.check == check), None)

    def raise_(self, check: str, severity: Severity, message: str) -> Incident:
        """Open an incident for ``check`` (or escalate the open one); returns it, saved."""
        now = time.time()
        incident = self.current(check)
        if incident is None:
            incident = new_incident(check, severity, message, now)
        elif Severity(incident.severity).rank > severity.rank:
            incident.escalate(severity, message, now)
        self.save(incident)
        return incident

    def resolve(self, check: str, message: str) -> Incident | None:
        """Resolve the open incident of ``check``; None when there is none."""
        incident = self.current(check)
        if incident is not None:
            incident.resolve(message, time.time())
            self.save(incident)
        return incident
