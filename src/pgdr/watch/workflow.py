"""``pgdr incident list|show|ack|resolve|review``: each change recorded, then notified at once.

Every database of the fleet keeps its incidents in its own records directory (the implicit
``default`` in ``$PGDR_HOME/records``, a declared one under ``records/databases/NAME``); the
commands read all of them (or the one named by ``--db``) and find an incident by id or unique
id prefix across them. Nothing here connects to a database.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path

from pgdr.config import PgdrSettings
from pgdr.config.fleet import load_fleet, select
from pgdr.core.errors import ConfigError
from pgdr.incident.review import complete_review, draft_review
from pgdr.incident.store import Incident, IncidentLog
from pgdr.notify import Dispatcher, Outcome, load_notify_config


def incident_log(settings: PgdrSettings) -> IncidentLog:
    """The store of the single default database (``$PGDR_HOME/records/incidents``)."""
    return IncidentLog(settings.home / "records" / "incidents")


def incident_logs(settings: PgdrSettings, db: str | None = None) -> dict[str, IncidentLog]:
    """Each database's store, in configuration order (``db``: one database, or ``all``)."""
    fleet = select(load_fleet(settings), db)
    return {d.name: IncidentLog(d.records_dir(settings) / "incidents") for d in fleet}


def listed(
    settings: PgdrSettings, db: str | None = None, include_resolved: bool = False
) -> list[tuple[str, Incident]]:
    """Open incidents and those whose review is pending (every one with ``include_resolved``),
    newest first, with their database."""
    out = [
        (name, i)
        for name, log in incident_logs(settings, db).items()
        for i in log.all()
        if include_resolved or i.open or i.review_status == "pending"
    ]
    return sorted(out, key=lambda pair: pair[1].opened_at, reverse=True)


@dataclass(frozen=True)
class Located:
    """An incident, the database it belongs to and its store."""

    database: str
    log: IncidentLog
    incident: Incident


def locate(settings: PgdrSettings, ref: str, db: str | None = None) -> Located:
    """The incident ``ref`` (an id or a unique id prefix) in any database's store."""
    matches = [
        Located(name, log, i)
        for name, log in incident_logs(settings, db).items()
        for i in log.all()
        if i.id.startswith(ref)
    ]
    exact = [m for m in matches if m.incident.id == ref]
    if len(exact) == 1 or (not exact and len(matches) == 1):
        return (exact or matches)[0]
    if not matches:
        raise ConfigError(f"There is no incident {ref!r}; see `pgdr incident list --all`.")
    ids = ", ".join(f"{m.incident.id} ({m.database})" for m in exact or matches)
    raise ConfigError(f"{ref!r} matches several incidents: {ids}; give a longer id or --db.")


def _who(by: str | None) -> str:
    return by or getpass.getuser()


def _notify(settings: PgdrSettings, log: IncidentLog, incident: Incident) -> list[Outcome]:
    records = log.directory.parent  # the database's records directory
    dispatcher = Dispatcher(load_notify_config(settings), log, records)
    return dispatcher.deliver_incident(incident)


def acknowledge(
    settings: PgdrSettings, ref: str, by: str | None = None, note: str = "", db: str | None = None
) -> tuple[Incident, list[Outcome]]:
    """Someone is on it: stops the time-based escalation; told to everyone already told."""
    found = locate(settings, ref, db)
    incident = found.log.acknowledge(found.incident, _who(by), note)
    return incident, _notify(settings, found.log, incident)


def resolve(
    settings: PgdrSettings, ref: str, by: str | None = None, note: str = "", db: str | None = None
) -> tuple[Incident, list[Outcome]]:
    """Close an incident by hand (a monitor check resolves its own when it passes again)."""
    found = locate(settings, ref, db)
    incident = found.log.close(found.incident, note or f"resolved by {_who(by)}", by=_who(by))
    return incident, _notify(settings, found.log, incident)


def start_review(
    settings: PgdrSettings, ref: str, force: bool = False, db: str | None = None
) -> Path:
    """Draft the post-incident document, pre-filled with the timeline."""
    found = locate(settings, ref, db)
    return draft_review(found.log, found.incident.id, force)


def finish_review(
    settings: PgdrSettings,
    ref: str,
    source: Path | None = None,
    by: str | None = None,
    db: str | None = None,
) -> Incident:
    """Store the completed document; the incident is no longer "review pending"."""
    found = locate(settings, ref, db)
    return complete_review(found.log, found.incident.id, source, _who(by))
