"""Deliveries: who hears about which incident event, once, retried until it arrives.

For each incident event worth telling (opened, escalated, escalation, acknowledged, resolved) and
each recipient channel, the outcome is recorded in ``records/notifications/<incident>.json`` under
a key made of the event's position, the contact and a hash of the channel (webhook URLs are
secrets: they are never written down). A key marked sent is never sent again; a failed one is
retried every round up to ``max_attempts`` and logged as one sentence each time. Time-based
escalation appends an ``escalation`` event to an open, unacknowledged incident once its level's
``after_minutes`` have passed, so it is part of the timeline like every other event.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pgdr.core.errors import ConfigError
from pgdr.core.records import read_json, write_json
from pgdr.core.severity import Severity
from pgdr.incident.store import Incident, IncidentLog
from pgdr.notify.config import Channel, Contact, NotifyConfig
from pgdr.notify.message import NOTIFIED_EVENTS, compose
from pgdr.notify.senders import DeliveryFailed, deliver, safe_url

log = logging.getLogger("pgdr.notify")
RECENT_S = 86400.0  # resolved incidents are still delivered (and retried) for a day


@dataclass
class Outcome:
    incident: str
    event: str
    contact: str
    channel: str
    delivered: bool
    attempts: int
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _channel_key(channel: Channel) -> str:
    return hashlib.sha256(channel.label.encode()).hexdigest()[:12]


def shown(channel: Channel) -> str:
    return (
        f"{channel.kind}:{channel.target if channel.kind == 'email' else safe_url(channel.target)}"
    )


class Dispatcher:
    def __init__(self, config: NotifyConfig, incidents: IncidentLog, records: Path) -> None:
        self.config = config
        self.incidents = incidents
        self.directory = records / "notifications"

    def _outbox(self, incident_id: str) -> dict[str, dict[str, Any]]:
        path = self.directory / f"{incident_id}.json"
        if not path.is_file():
            return {}
        try:
            return read_json(path, "delivery record")
        except ConfigError:
            return {}

    def recipients(self, incident: Incident, upto: int) -> list[Contact]:
        """Who hears about event ``upto`` of ``incident``."""
        severity = Severity(incident.severity)
        kind = incident.events[upto]["event"]
        following = self.config.next_level(severity)
        later = following[0] if following else []
        if kind == "escalation":
            return later
        chosen = self.config.first_level(severity)
        escalated = any(e["event"] == "escalation" for e in incident.events[:upto])
        if kind in ("acknowledged", "resolved") and escalated:
            chosen += [c for c in later if c not in chosen]
        return chosen

    def escalate(self, now: float) -> None:
        """Page the next level for open incidents nobody acknowledged in time."""
        for incident in self.incidents.open_incidents():
            following = self.config.next_level(Severity(incident.severity))
            if following is None or incident.acknowledged_at is not None:
                continue
            contacts, after = following
            if any(e["event"] == "escalation" for e in incident.events):
                continue
            if now - incident.opened_at >= after:
                names = ", ".join(f"{c.name} ({c.role})" for c in contacts) or "nobody configured"
                incident.event(
                    "escalation", f"unacknowledged for {after / 60:g} min: telling {names}", now
                )
                self.incidents.save(incident)

    def run(self, now: float | None = None) -> list[Outcome]:
        """Escalate what is due, then deliver every event not yet delivered."""
        now = now or time.time()
        self.escalate(now)
        outcomes: list[Outcome] = []
        for incident in self.incidents.all():
            if incident.open or now - (incident.resolved_at or 0) < RECENT_S:
                outcomes += self.deliver_incident(incident)
        return outcomes

    def deliver_incident(self, incident: Incident) -> list[Outcome]:
        outbox = self._outbox(incident.id)
        outcomes: list[Outcome] = []
        for index, event in enumerate(incident.events):
            if event["event"] not in NOTIFIED_EVENTS:
                continue
            for contact in self.recipients(incident, index):
                for channel in contact.channels:
                    key = f"{index}:{event['event']}:{contact.name}:{_channel_key(channel)}"
                    entry = outbox.get(key, {"attempts": 0, "status": "pending"})
                    if entry["status"] == "sent" or entry["attempts"] >= self.config.max_attempts:
                        continue
                    outcome = self._attempt(incident, event, contact, channel, entry)
                    outbox[key] = entry
                    outcomes.append(outcome)
        if outcomes:
            write_json(self.directory / f"{incident.id}.json", outbox, force=True)
        return outcomes

    def _attempt(
        self,
        incident: Incident,
        event: dict[str, Any],
        contact: Contact,
        channel: Channel,
        entry: dict[str, Any],
    ) -> Outcome:
        message = compose(incident, event, self.config.dashboard_url)
        entry["attempts"] = int(entry["attempts"]) + 1
        entry["channel"] = shown(channel)
        entry["contact"] = contact.name
        entry["at"] = time.time()
        try:
            deliver(channel, message, self.config.smtp, self.config.timeout_seconds)
        except DeliveryFailed as exc:
            entry["status"], entry["error"] = "failed", str(exc).rstrip(".")
            log.warning(
                "Notifying %s of incident %s (%s) via %s failed (attempt %d): %s; "
                "it will be retried.",
                contact.name,
                incident.id,
                event["event"],
                entry["channel"],
                entry["attempts"],
                exc,
            )
        else:
            entry["status"], entry["error"] = "sent", None
        return Outcome(
            incident.id,
            str(event["event"]),
            contact.name,
            entry["channel"],
            entry["status"] == "sent",
            entry["attempts"],
            entry["error"],
        )

    def failing(self) -> list[dict[str, Any]]:
        """Deliveries that have not arrived yet (for metrics and the dashboard)."""
        out: list[dict[str, Any]] = []
        if not self.directory.is_dir():
            return out
        for path in self.directory.glob("*.json"):
            for key, entry in self._outbox(path.stem).items():
                if entry.get("status") == "failed":
                    out.append({"incident": path.stem, "key": key} | entry)
        return out
