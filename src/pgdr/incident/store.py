"""Incidents: one store for every source (monitor checks, the WAL streamer, drills).

Kept as JSON records in ``$PGDR_HOME/records/incidents`` (never in the database being watched),
written through :mod:`pgdr.core.records` (atomic, mode 0600). Invariants:

* one open incident per check at a time; its severity is raised if the failure gets worse;
* a flapping check does not flap the incident: it opens after ``open_after`` failed rounds in a
  row and resolves after ``resolve_after`` passing rounds in a row (the streaks are kept in
  ``incidents/state/streaks.json`` so one-shot ``monitor run --once`` calls count too);
* an incident imported from another source (``source_ref``) is imported once;
* P0 and P1 incidents stay "review pending" after they are resolved until ``pgdr incident
  review --done`` stores the post-incident document;
* every change appends an event (opened, escalated, acknowledged, resolved, reviewed) so the
  timeline of the review and the notifications come from one place.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from pgdr.core.errors import ConfigError
from pgdr.core.records import read_json, write_json
from pgdr.core.severity import SEVERITY_LEVELS, Severity


class Observation(Protocol):
    """One check's outcome (pgdr.monitoring's CheckResult is one)."""

    name: str
    ok: bool
    severity: Severity | None
    message: str
    skipped: bool


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
    "wal_sync": "Commits were switched to asynchronous: bring the streamer back.",
    "wal_gap": "Take a new base backup now (`pgdr backup`): no restore can cross the gap.",
    "replication_slot": "The slot holds WAL nobody reads: restart the streamer or drop the slot.",
    "restore_test": "Run `pgdr backup verify --restore-test latest` and fix what fails.",
    "drill_overdue": "Run the quarterly drill: `pgdr drill run all`.",
    "integrity": "Read `pgdr check` findings and follow docs/integrity.md.",
    "key_files": "Restore the key file from its safe copy; `chmod 600` it.",
}
DEFAULT_ACTION = "Follow the runbook's incident response for this severity."


def runbook_action(check: str) -> str:
    return RUNBOOK_ACTIONS.get(check.split(":", maxsplit=1)[0], DEFAULT_ACTION)


@dataclass(frozen=True)
class FlapPolicy:
    open_after: int = 1  # failed rounds in a row before an incident opens
    resolve_after: int = 1  # passing rounds in a row before it resolves


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


class IncidentLog:
    """Incident records in a directory (``$PGDR_HOME/records/incidents``)."""

    def __init__(self, directory: Path, policy: FlapPolicy | None = None) -> None:
        self.directory = directory
        self.policy = policy or FlapPolicy()

    def _path(self, incident_id: str) -> Path:
        return self.directory / f"{incident_id}.json"

    def save(self, incident: Incident) -> None:
        write_json(self._path(incident.id), asdict(incident) | {"kind": "incident"}, force=True)

    def all(self) -> list[Incident]:
        if not self.directory.is_dir():
            return []
        incidents = []
        for path in self.directory.glob("*.json"):
            try:
                incidents.append(Incident.from_dict(read_json(path, "incident")))
            except (ConfigError, TypeError):
                continue  # a damaged record must not hide the others
        return sorted(incidents, key=lambda i: i.opened_at, reverse=True)

    def open_incidents(self) -> list[Incident]:
        return [i for i in self.all() if i.open]

    def get(self, ref: str) -> Incident:
        """An incident by id or unique id prefix."""
        matches = [i for i in self.all() if i.id == ref or i.id.startswith(ref)]
        exact = [i for i in matches if i.id == ref]
        if exact or len(matches) == 1:
            return (exact or matches)[0]
        if not matches:
            raise ConfigError(f"There is no incident {ref!r}; see `pgdr incident list --all`.")
        raise ConfigError(f"{ref!r} matches several incidents: {', '.join(i.id for i in matches)}.")

    # ----- flapping ---------------------------------------------------------------------
    def _streaks_path(self) -> Path:
        return self.directory / "state" / "streaks.json"

    def _streaks(self) -> dict[str, int]:
        if not self._streaks_path().is_file():
            return {}
        try:
            data = read_json(self._streaks_path(), "streak record")
        except ConfigError:
            return {}
        return {str(k): int(v) for k, v in data.items()}

    def _counted(self, results: Sequence[Observation]) -> dict[str, int]:
        """Consecutive failures (>0) or passes (<0) per check, this round included."""
        streaks = self._streaks()
        for r in results:
            if r.skipped:
                continue
            before = streaks.get(r.name, 0)
            if r.ok:
                streaks[r.name] = min(before, 0) - 1
            else:
                streaks[r.name] = max(before, 0) + 1
        write_json(self._streaks_path(), dict(streaks), force=True)
        return streaks

    # ----- changes ----------------------------------------------------------------------
    def update(self, results: Sequence[Observation], now: float | None = None) -> list[Incident]:
        """Open, escalate or resolve incidents from one round of checks; returns the changed."""
        now = now or time.time()
        current = {i.check: i for i in self.open_incidents()}
        streaks = self._counted(results)
        changed: list[Incident] = []
        for result in results:
            incident = current.get(result.name)
            streak = streaks.get(result.name, 0)
            if result.skipped:
                continue
            if not result.ok and result.severity is not None:
                if incident is None and streak >= self.policy.open_after:
                    incident = self.open(result.name, result.severity, result.message, now)
                elif (
                    incident is not None and Severity(incident.severity).rank > result.severity.rank
                ):
                    incident.severity = result.severity.value
                    incident.event("escalated", result.message, now)
                    self._review_if_needed(incident)
                    self.save(incident)
                else:
                    continue
                changed.append(incident)
            elif result.ok and incident is not None and -streak >= self.policy.resolve_after:
                self.resolve(incident, result.message, now)
                changed.append(incident)
        return changed

    def open(
        self,
        check: str,
        severity: Severity,
        message: str,
        now: float | None = None,
        source: str = "monitor",
        source_ref: str | None = None,
    ) -> Incident:
        now = now or time.time()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        slug = check.replace(":", "-").replace("/", "-")
        incident = Incident(
            id=f"{stamp}-{slug}-{uuid.uuid4().hex[:6]}",
            check=check,
            severity=severity.value,
            opened_at=now,
            message=message,
            source=source,
            source_ref=source_ref,
            action=runbook_action(check),
        )
        incident.event("opened", message, now)
        self._review_if_needed(incident)
        self.save(incident)
        return incident

    def resolve(
        self,
        incident: Incident,
        message: str,
        now: float | None = None,
        by: str | None = None,
        ref: str | None = None,
    ) -> Incident:
        if not incident.open:
            raise ConfigError(f"Incident {incident.id} is already resolved.")
        now = now or time.time()
        incident.resolved_at = now
        incident.event("resolved", message, now, by, ref)
        self.save(incident)
        return incident

    def acknowledge(self, incident: Incident, by: str, note: str = "") -> Incident:
        if not incident.open:
            raise ConfigError(
                f"Incident {incident.id} is resolved; there is nothing to acknowledge."
            )
        if incident.acknowledged_at is None:
            incident.acknowledged_at = time.time()
            incident.acknowledged_by = by
            incident.event(
                "acknowledged", note or f"acknowledged by {by}", incident.acknowledged_at, by
            )
            self.save(incident)
        return incident

    def mark_reviewed(self, incident: Incident, path: Path, by: str) -> Incident:
        incident.review_status = "done"
        incident.review_path = str(path)
        incident.event("reviewed", f"post-incident review stored at {path}", time.time(), by)
        self.save(incident)
        return incident

    def imported(self) -> set[str]:
        """References of records imported from other sources (see pgdr.watch.sources)."""
        refs: set[str] = set()
        for incident in self.all():
            refs |= {incident.source_ref} if incident.source_ref else set()
            refs |= {str(e["ref"]) for e in incident.events if e.get("ref")}
        return refs

    @staticmethod
    def _review_if_needed(incident: Incident) -> None:
        if SEVERITY_LEVELS[Severity(incident.severity)].needs_review:
            incident.review_required = True
            incident.review_steps = list(REVIEW_STEPS)
            incident.review_status = incident.review_status or "pending"
