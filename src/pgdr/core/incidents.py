"""Incident records: what is (or was) wrong, how severe on the P0–P3 scale, and what happened.

Any package may open or resolve an incident — the monitor for a failing check
(``pgdr.monitoring.IncidentLog``), the WAL streamer when it degrades synchronous commits — and
``pgdr monitor incidents`` shows them all, because they share this one store:
``$PGDR_HOME/records/incidents/<id>.json`` (:class:`~pgdr.core.records.RecordStore`: atomic,
0600). One open incident per check at a time; P0 and P1 incidents carry the runbook's
post-incident review checklist and stay "review pending" until it is stored. Each incident says
what the runbook says to do (``action``). The workflow on top (flapping policy, acknowledge,
review, imported sources) is :mod:`pgdr.incident.store`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pgdr.core.errors import ConfigError
from pgdr.core.records import RecordStore, read_json
from pgdr.core.severity import SEVERITY_LEVELS, Severity

REVIEW_STEPS = (
    "Document what happened",
    "Identify root cause",
    "Implement preventive measures",
    "Update runbooks",
    "Conduct team retrospective",
)


RUNBOOK_ACTIONS = {
    "database_up": "Runbook Scenario 1: check the server and its host; restore from backup if "
    "the data is lost (`pgdr restore`, `pgdr pitr`).",
    "latency": "Look for long-running queries and locks (`pgdr monitor report`).",
    "connections": "Find idle-in-transaction sessions; review pool sizes (`pgdr pool advise`).",
    "pool": "Connection pool exhaustion: raise DB_POOL_MAX or end stuck sessions.",
    "long_running_queries": "Inspect and, if needed, cancel the query (pg_cancel_backend).",
    "bloat": "VACUUM (ANALYZE) the listed tables.",
    "backup_age": "Take a backup now (`pgdr backup`) and check the schedule that should have.",
    "backup_failed": "Read the failure, fix it and run `pgdr backup` again.",
    "wal_streamer": "Restart `pgdr wal stream`; if commits block, `pgdr wal sync off`.",
    "wal-sync-degraded": "Commits were switched to asynchronous: bring the streamer back.",
    "wal_gap": "Take a new base backup now (`pgdr backup`): no restore can cross the gap.",
    "replication_slot": "The slot holds WAL nobody reads: restart the streamer or drop the slot.",
    "restore_test": "Run `pgdr backup verify --restore-test latest` and fix what fails.",
    "drill_overdue": "Run the quarterly drill: `pgdr drill run all`.",
    "drill": "Read `pgdr drill report` and fix what the drill found.",
    "integrity": "Read `pgdr check` findings and follow docs/integrity.md.",
    "key_files": "Restore the key file from its safe copy; `chmod 600` it.",
    "tls_certificate": "Renew the server certificate (ssl_cert_file), `chmod 600` its key, "
    "then `SELECT pg_reload_conf()`.",
}
DEFAULT_ACTION = "Follow the runbook's incident response for this severity."


def runbook_action(check: str) -> str:
    """What the runbook says to do about a failing ``check`` (``drill:NAME`` → ``drill``)."""
    return RUNBOOK_ACTIONS.get(check.split(":", maxsplit=1)[0], DEFAULT_ACTION)


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
    source: str = "monitor"
    source_ref: str | None = None
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    review_status: str | None = None  # "pending" until the review is stored, then "done"
    review_path: str | None = None
    action: str = ""

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    @property
    def state(self) -> str:
        if self.open:
            return "acknowledged" if self.acknowledged_at else "open"
        return "review pending" if self.review_status == "pending" else "resolved"

    def event(
        self, kind: str, message: str, at: float, by: str | None = None, ref: str | None = None
    ) -> None:
        extra = ({"by": by} if by else {}) | ({"ref": ref} if ref else {})
        self.events.append({"at": at, "event": kind, "message": message} | extra)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["open"] = self.open
        data["state"] = self.state
        data["rto_seconds"] = SEVERITY_LEVELS[Severity(self.severity)].rto.total_seconds()
        data["action"] = self.action or runbook_action(self.check)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Incident:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def escalate(self, severity: Severity, message: str, now: float) -> None:
        self.severity = severity.value
        self.event("escalated", message, now)
        self.require_review_if_needed()

    def resolve(
        self, message: str, now: float, by: str | None = None, ref: str | None = None
    ) -> None:
        self.resolved_at = now
        self.event("resolved", message, now, by, ref)

    def require_review_if_needed(self) -> None:
        if SEVERITY_LEVELS[Severity(self.severity)].needs_review:
            self.review_required = True
            self.review_steps = list(REVIEW_STEPS)
            self.review_status = self.review_status or "pending"


def new_incident(check: str, severity: Severity, message: str, now: float) -> Incident:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    incident = Incident(
        id=f"{stamp}-{check.replace(':', '-').replace('/', '-')}-{uuid.uuid4().hex[:6]}",
        check=check,
        severity=severity.value,
        opened_at=now,
        message=message,
        events=[{"at": now, "event": "opened", "message": message}],
        action=runbook_action(check),
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
        incidents = []
        for record_id in self._records.ids():
            try:
                incidents.append(
                    Incident.from_dict(read_json(self._records.path(record_id), "incident"))
                )
            except (ConfigError, TypeError):
                continue  # a damaged record must not hide the others
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
