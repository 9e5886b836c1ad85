"""What a notification says: what broke, since when, severity, the runbook action, a link."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgdr.core.severity import describe
from pgdr.core.time import utc_text
from pgdr.incident.store import Incident

HEADLINES = {
    "opened": "OPEN",
    "escalated": "WORSE",
    "escalation": "ESCALATED (unacknowledged)",
    "acknowledged": "ACKNOWLEDGED",
    "resolved": "RESOLVED",
}
NOTIFIED_EVENTS = tuple(HEADLINES)


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    payload: dict[str, Any]


def compose(incident: Incident, event: dict[str, Any], dashboard_url: str) -> Message:
    headline = HEADLINES.get(str(event["event"]), str(event["event"]).upper())
    subject = f"[pgdr {incident.severity}] {headline}: {incident.check}"
    action = incident.action or "Follow the runbook's incident response."
    lines = [
        subject,
        f"What broke: {incident.message}",
        f"Since: {utc_text(incident.opened_at)}",
        f"Severity: {describe(incident.severity)}",
        f"Runbook action: {action}",
        f"Event: {event['event']} at {utc_text(float(event['at']))}: {event.get('message', '')}",
        f"Dashboard: {dashboard_url}",
        f"Acknowledge: pgdr incident ack {incident.id}",
    ]
    text = "\n".join(lines)
    payload = {
        "event": event["event"],
        "at": event["at"],
        "incident": incident.as_dict(),
        "summary": subject,
        "text": text,
        "dashboard": dashboard_url,
    }
    return Message(subject, text, payload)
