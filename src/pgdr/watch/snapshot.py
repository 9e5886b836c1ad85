"""The ``rows_fell`` check: the runbook's mass deletion, against the newest recorded snapshot.

Each round compares the database with the newest ``pgdr check snapshot`` record of its records
directory (``pgdr check compare``: row counts, rows of then gone although inserts hid the drop,
the newest row gone back, the keys). Critical differences fail the check with the worst of
their P-levels (a drop of more than 10 % of a table is P0); the incident stays open until the
rows are back or a new snapshot is recorded after a legitimate bulk deletion. Without a
snapshot, or with the database unreachable, the check is skipped with the reason, never passed.
It reads every table of the profile once per round, so it suits the tables it protects, not a
multi-terabyte database every two minutes.
"""

from __future__ import annotations

from pathlib import Path

from pgdr.core.errors import ConfigError, PgdrError
from pgdr.core.records import RecordStore
from pgdr.core.severity import worst
from pgdr.integrity.snapshot import compare_snapshot
from pgdr.monitoring.checks import CheckResult, failed, passed, skipped
from pgdr.profile import Profile

NAME = "rows_fell"


def snapshot_store(records: Path) -> RecordStore:
    """The snapshots of the database whose records live in ``records``."""
    return RecordStore.at(records / "snapshots", "snapshot")


def check_rows_fell(records: Path, conninfo: str, profile: Profile) -> CheckResult:
    """Rows gone since the newest snapshot recorded in ``records``."""
    store = snapshot_store(records)
    if not store.ids():
        return skipped(NAME, "no `pgdr check snapshot` has been recorded yet")
    try:
        baseline, _path = store.load()
        report = compare_snapshot(conninfo, baseline, profile, timeout_s=60.0)
    except ConfigError as exc:
        return skipped(NAME, f"the newest snapshot cannot be read: {exc.message}")
    except PgdrError as exc:
        return skipped(NAME, exc.message)
    gone = [f for f in report.ordered() if f.severity == "critical"]
    facts = {"snapshot": baseline.get("id"), "tables": {f.table: f.count for f in gone}}
    severity = worst([f.priority for f in gone])
    if severity is not None:
        shown = "; ".join(f.message for f in gone[:3])
        more = f" and {len(gone) - 3} more" if len(gone) > 3 else ""
        message = f"rows gone since snapshot {baseline.get('id')}: {shown}{more}"
        return failed(NAME, severity, message, len(gone), [facts])
    if report.skipped:
        return skipped(NAME, f"the comparison was incomplete: {report.skipped[0].reason}")
    result = passed(NAME, f"every table has its rows of snapshot {baseline.get('id')}", 0)
    result.details = [facts]
    return result
