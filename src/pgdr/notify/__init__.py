"""Incidents reach a human: contacts, escalation per severity, webhook/Slack/SMTP notifiers.

Sits beside monitoring/incident: it reads incidents and their events, never the database.
Every delivery (incident event x contact x channel) is recorded in
``$PGDR_HOME/records/notifications/<incident>.json``: a delivered one is never sent again
(deduplicated), a failed one is recorded with its one-sentence reason and retried next round.
"""

from pgdr.notify.config import Channel, Contact, Escalation, NotifyConfig, load_notify_config
from pgdr.notify.dispatch import Dispatcher, Outcome

__all__ = [
    "Channel",
    "Contact",
    "Dispatcher",
    "Escalation",
    "NotifyConfig",
    "Outcome",
    "load_notify_config",
]
