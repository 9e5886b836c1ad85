"""Watching the database: the runbook's health SQL, checks with severities, metrics, incidents.

Owns the runbook's "Manual Health Checks" as structured reports, the check registry that turns
them into results with P0-P3 severities, Prometheus and JSON metrics, the scheduled monitor loop
(every two minutes by default, as the runbook's uptime check) feeding the incident store of
:mod:`pgdr.incident`, and the checks of the protection itself (backups, WAL, restore tests).
"""

from pgdr.core.severity import SEVERITY_LEVELS, Severity
from pgdr.monitoring.checks import CheckResult, MonitorConfig, run_checks
from pgdr.monitoring.reports import DatabaseReport, collect_report

__all__ = [
    "SEVERITY_LEVELS",
    "CheckResult",
    "DatabaseReport",
    "MonitorConfig",
    "Severity",
    "collect_report",
    "run_checks",
]
