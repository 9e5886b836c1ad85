"""Incidents: the one store, the post-incident review, and the emergency levers.

Owns the incident records (``store``: opened by monitor checks, imported from the WAL streamer
and drills, acknowledged, resolved, reviewed), the runbook's post-incident document
(``review``), and read-only mode (runbook Scenario 3, "Stop Further Operations"): stopping writes
at the database, where no application instance can forget to honour it, and lifting it again.
It sits below monitoring and notify, which both read and write incidents through it.
"""

from pgdr.incident.readonly import ReadOnlyState, read_only_status, set_read_only

__all__ = ["ReadOnlyState", "read_only_status", "set_read_only"]
