"""Emergency levers used during an incident (runbook Scenario 3, "Stop Further Operations").

Owns read-only mode: stopping writes at the database, where no application instance can forget
to honour it, and lifting it again.
"""

from pgdr.incident.readonly import ReadOnlyState, read_only_status, set_read_only

__all__ = ["ReadOnlyState", "read_only_status", "set_read_only"]
