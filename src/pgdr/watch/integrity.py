"""The ``integrity`` check: the findings of the newest recorded ``pgdr check``.

The check fails with the worst of the findings' own P-levels (a critical orphan is P1, one
touching more than 10% of a table P0, a warning P2, an info P3: the integrity scale). A run that
left something unchecked is never a pass: without findings it is reported as skipped, with the
reason. Without any record it is skipped too. Reads only the database's records directory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pgdr.core.errors import ConfigError, PgdrError
from pgdr.core.severity import Severity, worst
from pgdr.core.time import parse
from pgdr.integrity.records import check_store, save_check
from pgdr.integrity.run import CheckOptions, run_check
from pgdr.monitoring.checks import CheckResult, failed, passed, skipped
from pgdr.profile import Profile

NAME = "integrity"
LEVELS = {s.value for s in Severity}


def _finding(f: dict[str, Any]) -> str:
    where = f" in {f['table']}" if f.get("table") else ""
    return f"{f['priority']} {f.get('check')}{where}: {f.get('message')}"


def check_integrity(records: Path) -> CheckResult:
    """The newest ``pgdr check`` record of the database whose records live in ``records``."""
    store = check_store(records)
    if not store.ids():
        return skipped(NAME, "no `pgdr check` has been recorded yet")
    try:
        data, _path = store.load()
    except ConfigError as exc:
        return skipped(NAME, f"the newest check record cannot be read: {exc.message}")
    taken = parse(data.get("at"))
    age = time.time() - taken.timestamp() if taken else None
    facts = {"record": data.get("id"), "age_seconds": round(age, 3) if age else None}
    findings = [f for f in data.get("findings", []) if f.get("priority") in LEVELS]
    severity = worst([Severity(f["priority"]) for f in findings])
    label = f"the last `pgdr check` ({data.get('id')})"
    if severity is not None:
        shown = "; ".join(_finding(f) for f in findings[:3])
        more = f" and {len(findings) - 3} more" if len(findings) > 3 else ""
        message = f"{len(findings)} finding(s) in {label}: {shown}{more}"
        return failed(NAME, severity, message, len(findings), [facts])
    not_checked = data.get("summary", {}).get("not_checked") or []
    if not_checked:
        result = skipped(NAME, f"{label} was incomplete: {'; '.join(not_checked[:3])}")
        result.details = [facts]
        return result
    result = passed(NAME, f"{label} found nothing", 0)
    result.details = [facts]
    return result


def run_integrity(records: Path, conninfo: str, profile: Profile) -> CheckResult:
    """``pgdr check`` run and recorded now, then judged like :func:`check_integrity`: for a
    monitor that runs the integrity check itself every round (a drill's; in production
    ``pgdr check`` runs on its own schedule and the monitor reads its newest record)."""
    try:
        report = run_check(conninfo, profile, CheckOptions())
    except PgdrError as exc:
        return skipped(NAME, f"`pgdr check` could not run: {exc.message}")
    save_check(records, report)
    return check_integrity(records)
