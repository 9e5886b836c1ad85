"""The agent's check hook: what runs every uptime interval and where the results go.

A *check* is any callable ``(DatabaseHandle) -> list[CheckResult]``; a *sink* is any callable
``(DatabaseHandle, list[CheckResult]) -> None``. Every round the agent calls each check of a
database (a check that raises becomes a failed, skipped result naming the check, never a pass)
and hands the combined list to each sink. The defaults are the runbook's monitor checks (the
2-minute uptime check, latency, connections, long queries, bloat) and one sink that keeps the
database's incident log current and writes the last round to ``<records>/agent/checks.json``.
The protection checks and notifiers plug in here by adding to ``AgentHooks``; the agent itself
never notifies anyone.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pgdr.agent.database import DatabaseHandle
from pgdr.config.pool_settings import PoolSettings
from pgdr.core.errors import PgdrError
from pgdr.core.severity import Severity
from pgdr.incident.store import IncidentLog
from pgdr.monitoring.checks import CheckResult, MonitorConfig, run_checks

Check = Callable[[DatabaseHandle], list[CheckResult]]
Sink = Callable[[DatabaseHandle, list[CheckResult]], None]
LAST_ROUND = "checks.json"


def monitor_checks(handle: DatabaseHandle) -> list[CheckResult]:
    """The runbook's monitor checks against the database (``up`` first)."""
    try:
        conninfo = handle.target().conninfo
    except PgdrError as exc:
        return [CheckResult("up", False, Severity.P0, exc.message)]
    results, _report = run_checks(conninfo, PoolSettings(), MonitorConfig())
    return results


def record_incidents(handle: DatabaseHandle, results: list[CheckResult]) -> None:
    """Open, update and resolve incidents in the database's incident log."""
    IncidentLog(handle.records / "incidents").update(results)


def record_last_round(handle: DatabaseHandle, results: list[CheckResult]) -> None:
    directory = handle.records / "agent"
    directory.mkdir(parents=True, exist_ok=True)
    body = {"at": time.time(), "checks": [r.as_dict() for r in results]}
    tmp = directory / f".{LAST_ROUND}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(body, default=str, indent=1))
    tmp.replace(directory / LAST_ROUND)


@dataclass
class AgentHooks:
    """What every check round runs and where its results go (extend, do not replace)."""

    checks: list[Check] = field(default_factory=lambda: [monitor_checks])
    sinks: list[Sink] = field(default_factory=lambda: [record_incidents, record_last_round])


def run_round(handle: DatabaseHandle, hooks: AgentHooks) -> list[CheckResult]:
    """One round: every check (failures become results), then every sink."""
    results: list[CheckResult] = []
    for check in hooks.checks:
        name = getattr(check, "__name__", "check")
        try:
            results.extend(check(handle))
        except Exception as exc:  # a broken check is a finding, never a silent pass
            results.append(
                CheckResult(name, False, None, f"the check could not run: {exc}", skipped=True)
            )
    for sink in hooks.sinks:
        sink(handle, results)
    return results
