"""The dashboard's data: what an on-call person needs at 3 a.m., in one read.

Per database: the protection state (green/amber/red), the open incidents with their age,
severity and runbook action, the WAL lag and recovery window, the last restore test and drills;
plus the backups timeline and the latency history. Reads only: the monitor's last round, the
repository listing and the drill records; nothing is written.
"""

from __future__ import annotations

import time
from typing import Any

from pgdr.config import PgdrSettings
from pgdr.drills.report import drill_history
from pgdr.watch.build import MonitorSetup, repository


def _backups(settings: PgdrSettings, repo_name: str | None) -> dict[str, Any]:
    repo = repository(settings, repo_name)
    if repo is None:
        return {"backups": [], "failures": [], "note": "no repository configured or reachable"}
    return {
        "backups": [
            {
                "id": m.id,
                "kind": m.kind,
                "stop_at": m.stop_datetime.timestamp(),
                "size_bytes": m.stored_size,
                "duration_seconds": (m.stop_datetime - m.start_datetime).total_seconds(),
            }
            for m in repo.list_backups()[-30:]
        ],
        "failures": repo.backup_failures()[-10:],
    }


def dashboard_data(setup: MonitorSetup) -> dict[str, Any]:
    settings, monitor, repo_name = setup.settings, setup.monitor, setup.repo_name
    snap = monitor.last or monitor.run_once()
    now = time.time()
    database = snap.as_dict() | {
        "name": snap.database,
        "incidents": [
            i | {"age_seconds": round(now - float(i["opened_at"]), 1)} for i in snap.incidents
        ],
        "wal": snap.facts("wal_streamer"),
        "restore_test": snap.facts("restore_test"),
        "drill": snap.facts("drill_overdue"),
    }
    history = [
        {"at": h["at"], "latency_ms": h.get("latency_ms")}
        for h in monitor.history()
        if h.get("database", snap.database) == snap.database
    ]
    drills = [
        {
            "scenario": d.get("scenario"),
            "started_at": d.get("started_at"),
            "passed": d.get("passed"),
            "rto_seconds": (d.get("rto") or {}).get("seconds"),
            "rpo_seconds": (d.get("rpo") or {}).get("seconds"),
        }
        for d in drill_history(settings.home)[-8:]
    ]
    return {
        "collected_at": snap.collected_at,
        "databases": [database],
        "history": history,
        "drills": drills,
        **_backups(settings, repo_name),
    }
