"""``pgdr status``: how protected each database is, from what the repository and records say.

Read-only: it opens the repository and the local records, never connects to the database and
never creates or changes anything. Each database is:

* ``unprotected`` (exit 2, Nagios CRITICAL) when it has no complete backup, or the agent
  refused it;
* ``degraded`` (exit 1, Nagios WARNING) when anything below holds: WAL is configured but no
  streamer is alive; the repository's WAL has a gap, or trails the server (as the streamer last
  saw it) by more than 16 MiB or for more than 300 s; the newest backup is older than twice
  its schedule plus 5 minutes; no restore test has passed yet, or the newest failed, or it is
  older than twice its schedule plus 5 minutes; the repository cannot be read; the agent
  reports the database unreachable or a job failing; an incident is open;
* ``protected`` (exit 0, Nagios OK) otherwise.

``last_drill`` is the newest DR drill run recorded in ``$PGDR_HOME`` (the scenarios of one run
together: when it finished, whether every one passed, the largest measured RTO and RPO), or
null when none has run; a failed drill shows as its open incident (``drill:<scenario>``).

Every ``reasons`` entry is a sentence; ``not_checked`` says what could not be looked at and why.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgdr.agent.database import DatabaseHandle
from pgdr.agent.state import DatabaseState, StateStore, read_history
from pgdr.backup.manifest import Manifest
from pgdr.backup.repository import RESTORE_TESTS, Repository
from pgdr.config.fleet import when
from pgdr.core.errors import PgdrError
from pgdr.drills.report import drill_history
from pgdr.incident.store import IncidentLog
from pgdr.storage import ObjectNotFound
from pgdr.wal.archive import KEYRING
from pgdr.wal.status import LagLimits, gap_problems, lag_problems, repository_wal_status

PROTECTED, DEGRADED, UNPROTECTED = "protected", "degraded", "unprotected"
EXIT_CODES = {PROTECTED: 0, DEGRADED: 1, UNPROTECTED: 2}
NAGIOS = {PROTECTED: "OK", DEGRADED: "WARNING", UNPROTECTED: "CRITICAL"}
AGENT_STALE_S = 30.0
OVERDUE_GRACE_S = 300.0  # a job is overdue after twice its period plus this (slow runs)


@dataclass
class DatabaseStatus:
    name: str
    state: str = PROTECTED
    reasons: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def degrade(self, reason: str) -> None:
        self.reasons.append(reason)
        if self.state == PROTECTED:
            self.state = DEGRADED

    def unprotect(self, reason: str) -> None:
        self.reasons.append(reason)
        self.state = UNPROTECTED

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reasons": self.reasons,
            "not_checked": self.not_checked,
            **self.data,
        }


def _backup(m: Manifest, now: float, tests: list[dict[str, Any]]) -> dict[str, Any]:
    passed = [t for t in tests if t.get("backup_id") == m.id and t.get("passed")]
    return {
        "id": m.id,
        "kind": m.kind,
        "finished_at": m.stop_time,
        "age_seconds": round(now - m.stop_datetime.timestamp(), 1),
        "stored_bytes": m.stored_size,
        "size_bytes": m.stream_size,
        "verified": bool(passed),
    }


def restore_test_records(repo: Repository) -> list[dict[str, Any]]:
    """Every restore-test record in the repository, oldest first."""
    out: list[dict[str, Any]] = []
    for info in sorted(repo.store.list(RESTORE_TESTS), key=lambda i: i.key):
        try:
            out.append(json.loads(repo.store.get(info.key)))
        except (ValueError, ObjectNotFound):
            continue
    return sorted(out, key=lambda r: str(r.get("at", "")))


def _with_agent_history(
    tests: list[dict[str, Any]], handle: DatabaseHandle
) -> list[dict[str, Any]]:
    """The repository's records plus the agent's own (retention removes a pruned backup's)."""
    seen = {t.get("record") for t in tests}
    for event in read_history(handle.records):
        summary = event.get("summary")
        if event.get("job") == "restore_test" and summary and summary.get("record") not in seen:
            tests.append(summary)
            seen.add(summary.get("record"))
    return sorted(tests, key=lambda r: str(r.get("at", "")))


def _period(handle: DatabaseHandle, *jobs: str) -> float | None:
    periods = [s.period_s() for j in jobs if (s := handle.db.schedules.get(j)) is not None]
    return min(periods) if periods else None


def _repository_part(handle: DatabaseHandle, status: DatabaseStatus, now: float) -> None:
    repo = handle.repository()
    backups = repo.list_backups()
    tests = _with_agent_history(restore_test_records(repo), handle)
    status.data["repository"] = repo.url
    newest = backups[-1] if backups else None
    status.data["last_backup"] = _backup(newest, now, tests) if newest else None
    last_test = tests[-1] if tests else None
    status.data["last_restore_test"] = last_test
    if newest is None:
        status.unprotect("There is no complete base backup.")
    else:
        period = _period(handle, "full", "incremental")
        age = now - newest.stop_datetime.timestamp()
        if period is not None and age > 2 * period + OVERDUE_GRACE_S:
            status.degrade(
                f"The newest backup is {age:.0f} s old (schedule: every {period:.0f} s)."
            )
    if last_test is None:
        status.degrade("No restore test has run: the backups are not proven restorable.")
    elif not last_test.get("passed"):
        status.degrade(f"The last restore test failed: {last_test.get('detail')}")
    else:
        period = _period(handle, "restore_test")
        tested = datetime.fromisoformat(str(last_test["at"])).timestamp()
        if period is not None and now - tested > 2 * period + OVERDUE_GRACE_S:
            status.degrade(f"The last passing restore test is {now - tested:.0f} s old.")
    _wal_part(handle, repo, status, now)


def _wal_part(handle: DatabaseHandle, repo: Repository, status: DatabaseStatus, now: float) -> None:
    wal: dict[str, Any] = {"configured": handle.db.config.wal, "streaming": False}
    status.data["wal"] = wal
    status.data["recovery_window"] = None
    if not repo.store.exists(KEYRING):
        if handle.db.config.wal:
            status.degrade("The repository holds no WAL: point-in-time recovery is impossible.")
        return
    report = repository_wal_status(repo)
    streamer = report.streamer or {}
    wal.update(
        streaming=report.streamer_alive,
        state=streamer.get("state"),
        lag_bytes=streamer.get("lag_bytes"),
        lag_seconds=round(now - report.newest_wal_at, 1) if report.newest_wal_at else None,
        restarts=streamer.get("restarts"),
        repository_error=streamer.get("repository_error"),
        receiver_error=streamer.get("receiver_error"),
        receiver_error_at=when(streamer.get("receiver_error_at")),
        gaps=report.gaps,
    )
    status.data["recovery_window"] = {
        "start": when(report.window_start),
        "end": when(report.window_end),
    }
    if handle.db.config.wal and not report.streamer_alive:
        status.degrade("No WAL streamer is alive: new commits are not being protected.")
    if report.streamer_alive and streamer.get("receiver_error"):
        status.degrade(f"The WAL receiver is failing: {streamer['receiver_error']}")
    if streamer.get("repository_error"):
        status.degrade(f"The streamer cannot upload: {streamer['repository_error']}")
    for problem in gap_problems(report) + lag_problems(report, LagLimits()):
        status.degrade(problem)


def _agent_part(
    handle: DatabaseHandle, state: DatabaseState | None, status: DatabaseStatus, now: float
) -> None:
    if state is None:
        status.data["agent"] = None
        status.data["next_jobs"] = {}
        status.not_checked.append("No agent has run for this database: no schedule to show.")
        return
    alive = state.heartbeat_at is not None and now - state.heartbeat_at < AGENT_STALE_S
    status.data["agent"] = {
        "running": alive,
        "pid": state.agent_pid,
        "heartbeat_at": when(state.heartbeat_at),
        "problem": state.problem,
        "system_identifier": state.system_identifier,
    }
    status.data["next_jobs"] = {
        name: {
            "next_due": when(job.next_due),
            "running": job.running_since is not None,
            "last_ok": job.last_ok,
            "last_message": job.last_message,
            "retry_at": when(job.retry_at),
            "skipped": job.skipped,
        }
        for name, job in state.jobs.items()
    }
    if state.problem and state.problem.startswith("Refused"):
        status.unprotect(state.problem)
    elif alive and state.problem:
        status.degrade(state.problem)
    for name, job in state.jobs.items():
        if job.last_ok is False:
            status.degrade(f"The agent's {name} job is failing: {job.last_message}")


def last_drill(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest drill run (its scenarios together), or None."""
    finished = [d for d in history if d.get("finished_at")]
    if not finished:
        return None
    newest = max(finished, key=lambda d: str(d["finished_at"]))
    group = newest.get("run_id") or newest.get("id")
    run = [d for d in finished if (d.get("run_id") or d.get("id")) == group]
    rtos = [float(v) for d in run if (v := (d.get("rto") or {}).get("seconds")) is not None]
    rpos = [float(v) for d in run if (v := (d.get("rpo") or {}).get("seconds")) is not None]
    return {
        "id": group,
        "at": newest["finished_at"],
        "scenarios": sorted(str(d.get("scenario")) for d in run),
        "passed": all(bool(d.get("passed")) for d in run),
        "rto_s": max(rtos) if rtos else None,
        "rpo_s": max(rpos) if rpos else None,
    }


def database_status(handle: DatabaseHandle, now: float | None = None) -> DatabaseStatus:
    now = time.time() if now is None else now
    status = DatabaseStatus(handle.name)
    state = StateStore.read(handle.records)
    try:
        _repository_part(handle, status, now)
    except PgdrError as exc:
        status.degrade(f"The repository cannot be read: {exc.message}")
        status.not_checked.append("Backups, restore tests and WAL: the repository is unreachable.")
    _agent_part(handle, state, status, now)
    status.data["last_drill"] = last_drill(drill_history(handle.settings.home))
    incidents = IncidentLog(handle.records / "incidents").open_incidents()
    status.data["incidents"] = [i.as_dict() for i in incidents]
    if incidents:
        status.degrade(f"{len(incidents)} incident(s) open: {incidents[0].message}")
    return status


def fleet_status(handles: list[DatabaseHandle]) -> dict[str, Any]:
    statuses = [database_status(h) for h in handles]
    worst = max((EXIT_CODES[s.state] for s in statuses), default=0)
    return {
        "state": next(k for k, v in EXIT_CODES.items() if v == worst),
        "databases": {s.name: s.as_dict() for s in statuses},
    }


def nagios_line(report: dict[str, Any]) -> str:
    """One Nagios plugin line: ``PGDR <STATE> - summary | perfdata``."""
    dbs: dict[str, dict[str, Any]] = report["databases"]
    parts = []
    perf = []
    for name, db in dbs.items():
        reason = f" ({db['reasons'][0]})" if db["reasons"] else ""
        parts.append(f"{name} {db['state']}{reason}")
        backup = db.get("last_backup") or {}
        wal = db.get("wal") or {}
        test = db.get("last_restore_test") or {}
        if backup.get("age_seconds") is not None:
            perf.append(f"{name}_backup_age={backup['age_seconds']}s")
        if wal.get("lag_bytes") is not None:
            perf.append(f"{name}_wal_lag={wal['lag_bytes']}B")
        if wal.get("lag_seconds") is not None:
            perf.append(f"{name}_wal_lag_seconds={wal['lag_seconds']}s")
        if test.get("proven_rto_s") is not None:
            perf.append(f"{name}_proven_rto={test['proven_rto_s']}s")
        perf.append(f"{name}_incidents={len(db.get('incidents', []))}")
    text = "; ".join(parts).replace("|", "/")
    return f"PGDR {NAGIOS[report['state']]} - {text} | {' '.join(perf)}"
