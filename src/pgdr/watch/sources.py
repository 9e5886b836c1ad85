"""Incidents recorded elsewhere, imported once into the one store.

A drill record that did not pass opens ``drill:<scenario>`` (P2), resolved by the next passing
drill of that scenario. Each record is imported once: its reference is kept on the incident
(``source_ref`` or the ``ref`` of the resolving event). The WAL streamer needs no import: it
writes its degrade/restore incidents into the same store itself (:mod:`pgdr.core.incidents`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pgdr.core.severity import Severity
from pgdr.drills.report import drill_history
from pgdr.incident.store import Incident, IncidentLog


def _open_for(log: IncidentLog, check: str) -> Incident | None:
    return next((i for i in log.open_incidents() if i.check == check), None)


def _apply(log: IncidentLog, check: str, record: dict[str, Any], ref: str, opens: bool) -> None:
    at = float(record["at"])
    current = _open_for(log, check)
    message = str(record.get("message", ""))
    if opens and current is None:
        severity = Severity(record.get("severity", "P0"))
        log.open(check, severity, message, at, source=record["source"], source_ref=ref)
    elif not opens and current is not None:
        log.close(current, message, at, ref=ref)


def import_drills(log: IncidentLog, home: Path, done: set[str]) -> None:
    for data in drill_history(home):
        ref = f"drill:{data.get('id')}"
        if ref in done or not data.get("finished_at"):
            continue
        record = {
            "at": datetime.fromisoformat(str(data["finished_at"])).timestamp(),
            "message": f"drill {data.get('scenario')} "
            + ("passed" if data.get("passed") else f"failed: {'; '.join(data.get('issues', []))}"),
            "source": "drill",
            "severity": "P2",
        }
        _apply(log, f"drill:{data.get('scenario')}", record, ref, not data.get("passed"))


def import_sources(log: IncidentLog, home: Path) -> None:
    """Bring the drills' incidents into ``log`` (idempotent)."""
    import_drills(log, home, log.imported())
