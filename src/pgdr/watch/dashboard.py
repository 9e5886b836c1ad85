"""The dashboard's data: what an on-call person needs at 3 a.m., in one read.

Per watched database: the protection state (green/amber/red), the open incidents with their
age, severity and runbook action, the WAL lag and recovery window, the last restore test, the
backups timeline and the latency history; for the whole installation, the drills (recorded per
PGDR_HOME). Reads only: each monitor's last round, the repository listing and the drill records;
nothing is written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgdr.drills.report import drill_history
from pgdr.monitoring.metrics import MetricsSnapshot
from pgdr.watch.build import MonitorSetup

BACKUPS_SHOWN = 30
FAILURES_SHOWN = 10
DRILLS_SHOWN = 8


def _backups(setup: MonitorSetup) -> dict[str, Any]:
    repo = setup.repository()
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
            for m in repo.list_backups()[-BACKUPS_SHOWN:]
        ],
        "failures": repo.backup_failures()[-FAILURES_SHOWN:],
    }


def _incidents(snap: MetricsSnapshot, now: float) -> list[dict[str, Any]]:
    return [
        i | {"database": snap.database, "age_seconds": round(now - float(i["opened_at"]), 1)}
        for i in snap.incidents
    ]


def database_board(setup: MonitorSetup) -> dict[str, Any]:
    """One database's part of the dashboard (its monitor's last round, run one if none yet)."""
    monitor = setup.monitor
    snap = monitor.last or monitor.run_once()
    history = [
        {"at": h["at"], "latency_ms": h.get("latency_ms")}
        for h in monitor.history()
        if h.get("database", snap.database) == snap.database
    ]
    return snap.as_dict() | {
        "name": snap.database,
        "incidents": _incidents(snap, time.time()),
        "wal": snap.facts("wal_streamer"),
        "restore_test": snap.facts("restore_test"),
        "drill": snap.facts("drill_overdue"),
        "history": history,
        **_backups(setup),
    }


def drills(home: Path) -> list[dict[str, Any]]:
    """The newest drills of this PGDR_HOME, oldest first."""
    return [
        {
            "scenario": d.get("scenario"),
            "started_at": d.get("started_at"),
            "passed": d.get("passed"),
            "rto_seconds": (d.get("rto") or {}).get("seconds"),
            "rpo_seconds": (d.get("rpo") or {}).get("seconds"),
        }
        for d in drill_history(home)[-DRILLS_SHOWN:]
    ]


def dashboard_data(setups: Sequence[MonitorSetup]) -> dict[str, Any]:
    """Every watched database (in configuration order) and the drills."""
    boards = [database_board(s) for s in setups]
    return {
        "collected_at": max((b["collected_at"] for b in boards), default=time.time()),
        "databases": boards,
        "drills": drills(setups[0].settings.home) if setups else [],
    }
