"""The incident workflow on the one store (:mod:`pgdr.core.incidents`).

Every source writes to ``$PGDR_HOME/records/incidents`` (monitor checks here, the WAL streamer
through the core store, failed drills through :mod:`pgdr.watch`). Invariants added here:

* a flapping check does not flap the incident: it opens after ``open_after`` failed rounds in a
  row and resolves after ``resolve_after`` passing rounds in a row (the streaks are kept in
  ``incidents/state/streaks.json`` so one-shot ``monitor run --once`` calls count too);
* an incident imported from another source (``source_ref``) is imported once;
* acknowledging stops the time-based escalation; P0 and P1 incidents stay "review pending" after
  they are resolved until ``pgdr incident review --done`` stores the post-incident document;
* every change appends an event (opened, escalated, acknowledged, resolved, reviewed), so the
  review's timeline and the notifications come from one place.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pgdr.core.errors import ConfigError
from pgdr.core.incidents import REVIEW_STEPS, Incident, IncidentStore, new_incident
from pgdr.core.records import read_json, write_json
from pgdr.core.severity import Severity

__all__ = ["REVIEW_STEPS", "FlapPolicy", "Incident", "IncidentLog", "Observation"]


class Observation(Protocol):
    """One check's outcome (pgdr.monitoring's CheckResult is one)."""

    name: str
    ok: bool
    severity: Severity | None
    message: str
    skipped: bool


@dataclass(frozen=True)
class FlapPolicy:
    open_after: int = 1  # failed rounds in a row before an incident opens
    resolve_after: int = 1  # passing rounds in a row before it resolves


class IncidentLog(IncidentStore):
    """The incident store with the monitor's rounds, acknowledgements and reviews."""

    def __init__(self, directory: Path, policy: FlapPolicy | None = None) -> None:
        super().__init__(directory)
        self.policy = policy or FlapPolicy()

    def get(self, ref: str) -> Incident:
        """An incident by id or unique id prefix."""
        matches = [i for i in self.all() if i.id.startswith(ref)]
        exact = [i for i in matches if i.id == ref]
        if exact or len(matches) == 1:
            return (exact or matches)[0]
        if not matches:
            raise ConfigError(f"There is no incident {ref!r}; see `pgdr incident list --all`.")
        ids = ", ".join(i.id for i in matches)
        raise ConfigError(f"{ref!r} matches several incidents: {ids}.")

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
            streaks[r.name] = min(before, 0) - 1 if r.ok else max(before, 0) + 1
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
                    incident.escalate(result.severity, result.message, now)
                    self.save(incident)
                else:
                    continue
                changed.append(incident)
            elif result.ok and incident is not None and -streak >= self.policy.resolve_after:
                changed.append(self.close(incident, result.message, now))
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
        incident = new_incident(check, severity, message, now or time.time())
        incident.source, incident.source_ref = source, source_ref
        self.save(incident)
        return incident

    def close(
        self,
        incident: Incident,
        message: str,
        now: float | None = None,
        by: str | None = None,
        ref: str | None = None,
    ) -> Incident:
        if not incident.open:
            raise ConfigError(f"Incident {incident.id} is already resolved.")
        incident.resolve(message, now or time.time(), by, ref)
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
            message = note or f"acknowledged by {by}"
            incident.event("acknowledged", message, incident.acknowledged_at, by)
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
