"""Incidents from monitor checks: opened when a check fails, resolved when it passes again.

The records and their store are ``pgdr.core.incidents`` (shared with the WAL streamer, so
``pgdr monitor incidents`` shows every incident); this module applies one round of check results
to them. One open incident per check at a time; its severity is raised if the failure gets worse.
"""

from __future__ import annotations

import time

from pgdr.core.incidents import Incident, IncidentStore, new_incident
from pgdr.core.severity import Severity
from pgdr.monitoring.checks import CheckResult


class IncidentLog(IncidentStore):
    """The incident store, fed by rounds of monitor checks."""

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
                    incident = new_incident(result.name, result.severity, result.message, now)
                elif Severity(incident.severity).rank > result.severity.rank:
                    incident.escalate(result.severity, result.message, now)
                else:
                    continue
                self.save(incident)
                changed.append(incident)
            elif result.ok and incident is not None:
                incident.resolve(result.message, now)
                self.save(incident)
                changed.append(incident)
        return changed
