"""Incidents recorded elsewhere, imported once into the one store.

* the WAL streamer writes ``incidents/<stamp>-wal-sync-degraded.json`` (P0: commits were switched
  to asynchronous) and ``...-wal-sync-restored.json`` into the repository;
* a drill record that did not pass opens ``drill:<scenario>`` (P2), resolved by the next passing
  drill of that scenario.

Each record is imported once: its reference is kept on the incident (``source_ref`` or the
``ref`` of the resolving event). A repository that cannot be read is skipped this round.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import Any

from pgdr.backup import Repository
from pgdr.core.errors import PgdrError
from pgdr.core.severity import Severity
from pgdr.drills.report import drill_history
from pgdr.incident.store import Incident, IncidentLog
from pgdr.storage import ObjectNotFound

STREAMER_PREFIX = "incidents/"


def _open_for(log: IncidentLog, check: str) -> Incident | None:
    return next((i for i in log.open_incidents() if i.check == check), None)


def _apply(log: IncidentLog, check: str, record: dict[str, Any], ref: str, opens: bool) -> None:
    at = float(record["at"])
    current = _open_for(log, check)
    message = str(record.get("message", ""))
    if opens and current is None:
        severity = Severity(record.get("severity", "P0"))
        log.open(check, severity, message, at, source=record["source"], source_ref=ref)
    elif not opens and current is not None:
        log.resolve(current, message, at, ref=ref)


def import_streamer(log: IncidentLog, repo: Repository, done: set[str]) -> None:
    with contextlib.suppress(PgdrError):
        for info in sorted(repo.store.list(STREAMER_PREFIX), key=lambda i: i.key):
            if info.key in done:
                continue
            with contextlib.suppress(ObjectNotFound, ValueError):
                record = json.loads(repo.store.get(info.key))
                opens = record.get("kind") == "wal-sync-degraded"
                record |= {"source": "wal-streamer", "severity": "P0"}
                _apply(log, "wal_sync", record, info.key, opens)


def import_drills(log: IncidentLog, home: Any, done: set[str]) -> None:
    for data in drill_history(home):
        ref = f"drill:{data.get('id')}"
        if ref in done or not data.get("finished_at"):
            continue
        record = {
            "at": datetime.fromisoformat(str(data["finished_at"])).timestamp(),
            "message": f"drill {data.get('scenario')} "
            + ("passed" if data.get("passed") else f"failed: {'; '.join(data.get('issues', []))}"),
            "source": "drill",
            "severity": "P2",
        }
        _apply(log, f"drill:{data.get('scenario')}", record, ref, not data.get("passed"))


def import_sources(log: IncidentLog, repo: Repository | None, home: Any) -> None:
    """Bring the streamer's and the drills' incidents into ``log`` (idempotent)."""
    done = log.imported()
    if repo is not None:
        import_streamer(log, repo, done)
    import_drills(log, home, done)
