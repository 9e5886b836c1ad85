"""Watching the protection end to end: checks, the one incident store, notifications.

The composition layer (just under the CLI and API, above drills): it builds the monitor that
``pgdr monitor run``, ``pgdr serve`` (and the agent) run each interval, with the protection and
drill checks, the flapping policy and the notifier; it imports the incidents other parts record
(the WAL streamer's degrade/restore records, failed drills) into the one store; and it is the
single entry point of ``pgdr incident ack|resolve|review``, so that every change is notified.
Nothing here connects to the watched database except the checks themselves.
"""

from pgdr.watch.build import (
    MonitorSetup,
    Watched,
    adopt_monitor,
    backup_period,
    build_monitor,
    drill_monitor,
    flap_policy,
    watch_checks,
)
from pgdr.watch.dashboard import dashboard_data
from pgdr.watch.workflow import (
    acknowledge,
    finish_review,
    incident_log,
    incident_logs,
    resolve,
    start_review,
)

__all__ = [
    "MonitorSetup",
    "Watched",
    "acknowledge",
    "adopt_monitor",
    "backup_period",
    "build_monitor",
    "dashboard_data",
    "drill_monitor",
    "finish_review",
    "flap_policy",
    "incident_log",
    "incident_logs",
    "resolve",
    "start_review",
    "watch_checks",
]
