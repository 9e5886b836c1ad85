"""``pgdr incident ack|resolve|review``: each change recorded, then notified at once."""

from __future__ import annotations

import getpass
from pathlib import Path

from pgdr.config import PgdrSettings
from pgdr.incident.review import complete_review, draft_review
from pgdr.incident.store import Incident, IncidentLog
from pgdr.notify import Dispatcher, Outcome, load_notify_config


def incident_log(settings: PgdrSettings) -> IncidentLog:
    return IncidentLog(settings.home / "records" / "incidents")


def _who(by: str | None) -> str:
    return by or getpass.getuser()


def _notify(settings: PgdrSettings, log: IncidentLog, incident: Incident) -> list[Outcome]:
    dispatcher = Dispatcher(load_notify_config(settings), log, settings.home / "records")
    return dispatcher.deliver_incident(incident)


def acknowledge(
    settings: PgdrSettings, ref: str, by: str | None = None, note: str = ""
) -> tuple[Incident, list[Outcome]]:
    """Someone is on it: stops the time-based escalation; told to everyone already told."""
    log = incident_log(settings)
    incident = log.acknowledge(log.get(ref), _who(by), note)
    return incident, _notify(settings, log, incident)


def resolve(
    settings: PgdrSettings, ref: str, by: str | None = None, note: str = ""
) -> tuple[Incident, list[Outcome]]:
    """Close an incident by hand (a monitor check resolves its own when it passes again)."""
    log = incident_log(settings)
    incident = log.close(log.get(ref), note or f"resolved by {_who(by)}", by=_who(by))
    return incident, _notify(settings, log, incident)


def start_review(settings: PgdrSettings, ref: str, force: bool = False) -> Path:
    """Draft the post-incident document, pre-filled with the timeline."""
    return draft_review(incident_log(settings), ref, force)


def finish_review(
    settings: PgdrSettings, ref: str, source: Path | None = None, by: str | None = None
) -> Incident:
    """Store the completed document; the incident is no longer "review pending"."""
    return complete_review(incident_log(settings), ref, source, _who(by))
