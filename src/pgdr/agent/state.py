"""The agent's memory of each database's jobs, kept under ``<records>/agent/``.

``state.json`` holds, per job, when it is next due and how its last run ended; it is replaced
atomically (write, fsync, rename) after every change, so a ``kill -9`` leaves either the old or
the new state, never a torn one. ``jobs.jsonl`` is the append-only history (started, finished,
failed, interrupted, skipped) that ``pgdr status`` and the tests read.

Invariants that make a restart neither repeat nor skip a due job:

* a job's ``next_due`` advances only in the same write that records its run as finished (or
  failed); a run cut off by a kill stays due, is recorded as ``interrupted`` at the next start
  and runs again once;
* occurrences that passed while a job was running (or while the agent was down) are not
  stacked: the job runs once and the missed occurrences are recorded as ``skipped``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
HISTORY_FILE = "jobs.jsonl"


@dataclass
class JobState:
    next_due: float | None = None
    running_since: float | None = None
    running_due: float | None = None
    last_started: float | None = None
    last_finished: float | None = None
    last_ok: bool | None = None
    last_message: str | None = None
    runs: int = 0
    failures: int = 0
    skipped: int = 0
    retry_at: float | None = None


@dataclass
class DatabaseState:
    jobs: dict[str, JobState] = field(default_factory=dict)
    system_identifier: str | None = None
    reachable: bool | None = None
    problem: str | None = None  # a sentence: why the database is not fully served
    agent_pid: int | None = None
    heartbeat_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StateStore:
    """``state.json`` and ``jobs.jsonl`` of one database; thread-safe within the process."""

    def __init__(self, records: Path) -> None:
        self.directory = records / "agent"
        self._lock = threading.Lock()
        self.state = self.load()

    @staticmethod
    def read(records: Path) -> DatabaseState | None:
        """The saved state, for readers such as ``pgdr status`` (None when there is none)."""
        path = records / "agent" / STATE_FILE
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        jobs = {k: JobState(**v) for k, v in raw.pop("jobs", {}).items()}
        known = {k: v for k, v in raw.items() if k in DatabaseState.__dataclass_fields__}
        return DatabaseState(jobs=jobs, **known)

    def load(self) -> DatabaseState:
        return self.read(self.directory.parent) or DatabaseState()

    def job(self, name: str) -> JobState:
        return self.state.jobs.setdefault(name, JobState())

    def save(self) -> None:
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.state.heartbeat_at = time.time()
            body = json.dumps(self.state.as_dict(), indent=1, sort_keys=True).encode()
            tmp = self.directory / f".{STATE_FILE}.{os.getpid()}.tmp"
            with tmp.open("wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(self.directory / STATE_FILE)

    def record(self, job: str, event: str, **fields: Any) -> None:
        """Append one line to the history (fsync'd: the tests count these)."""
        line = {"at": time.time(), "job": job, "event": event, **fields}
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with (self.directory / HISTORY_FILE).open("a") as handle:
                handle.write(json.dumps(line, default=str) + "\n")
                handle.flush()
                os.fsync(handle.fileno())


def read_history(records: Path) -> list[dict[str, Any]]:
    """Every line of ``jobs.jsonl`` (a torn last line from a kill is ignored)."""
    path = records / "agent" / HISTORY_FILE
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    out: list[dict[str, Any]] = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
