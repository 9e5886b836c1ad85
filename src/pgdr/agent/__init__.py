"""Always-on protection: the ``pgdr agent`` process and ``pgdr status``.

Sits just under the CLI and the API and above the drills: it schedules what the capability
packages do (WAL streaming, base backups, retention, copies, restore tests, drills, monitor
checks) for every database of the fleet (``[databases.NAME]`` in ``pgdr.toml``), and reports
how protected each one is from what the repository and the records say.
"""

from pgdr.agent.checks import AgentHooks, Check, Sink, database_monitor
from pgdr.agent.database import DatabaseHandle, database_handle, database_handles
from pgdr.agent.runner import Agent, AgentOptions
from pgdr.agent.status import EXIT_CODES, fleet_status, nagios_line

__all__ = [
    "EXIT_CODES",
    "Agent",
    "AgentHooks",
    "AgentOptions",
    "Check",
    "DatabaseHandle",
    "Sink",
    "database_handle",
    "database_handles",
    "database_monitor",
    "fleet_status",
    "nagios_line",
]
