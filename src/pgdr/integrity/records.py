"""The record of each ``pgdr check`` run, kept so the monitor can watch integrity findings.

Every run (passed, failed or incomplete) is saved as one JSON record of kind
``integrity-check`` in the core record store, under the checked database's records directory
(``$PGDR_HOME/records/integrity-checks/`` for the default database,
``records/databases/<name>/integrity-checks/`` for one declared in ``pgdr.toml``). A record is
the run's ``--json`` report plus its id and time; it is written once and never replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgdr.cluster.target import resolve_target
from pgdr.config import PgdrSettings
from pgdr.config.fleet import resolve_database
from pgdr.core.records import RecordStore, new_record_id
from pgdr.core.time import iso
from pgdr.integrity.findings import Report
from pgdr.integrity.run import CheckOptions, Progress, run_check
from pgdr.profile import Profile

KIND = "integrity-check"


def check_store(records: Path) -> RecordStore:
    """The integrity-check records of the database whose records live in ``records``."""
    return RecordStore.at(records / "integrity-checks", KIND)


def save_check(records: Path, report: Report) -> Path:
    """Save ``report`` as a new record; returns its path."""
    data: dict[str, Any] = report.as_dict() | {
        "id": new_record_id(),
        "kind": KIND,
        "report_kind": report.kind,
        "at": iso(),
    }
    return check_store(records).save(data)


def check_and_record(
    settings: PgdrSettings,
    database: str | None,
    profile: Profile | None,
    options: CheckOptions,
    progress: Progress | None = None,
) -> tuple[Report, Path]:
    """``pgdr check [--db NAME]``: run every check on the database, then save the record."""
    db = resolve_database(settings, database)
    conninfo = resolve_target(settings, url=db.url()).conninfo
    report = run_check(conninfo, profile, options, progress)
    return report, save_check(db.records_dir(settings), report)
