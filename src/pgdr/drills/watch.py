"""The drill schedule as a monitor check: the runbook's quarterly DR test overdue is P2.

It only reads the drill records; :mod:`pgdr.watch` adds it to the monitor's checks.
"""

from __future__ import annotations

from pathlib import Path

from pgdr.core.severity import Severity
from pgdr.drills.report import drill_history, next_scheduled
from pgdr.monitoring.checks import CheckResult, failed, passed


def check_drill_overdue(home: Path) -> CheckResult:
    """The runbook's quarterly DR test: overdue (or never run) is P2; carries the last RTO/RPO."""
    history = drill_history(home)
    schedule = next_scheduled(history)
    last = history[-1] if history else {}
    facts = {
        "rto_seconds": (last.get("rto") or {}).get("seconds"),
        "rpo_seconds": (last.get("rpo") or {}).get("seconds"),
    }
    result = passed("drill_overdue", str(schedule["note"]))
    if schedule["overdue"]:
        result = failed("drill_overdue", Severity.P2, str(schedule["note"]))
    elif schedule["last_full_run_passed"] is False:
        message = "the last full drill failed: see `pgdr drill report`"
        result = failed("drill_overdue", Severity.P2, message)
    result.details = [facts]
    return result
