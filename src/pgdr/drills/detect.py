"""Detection in a drill: pgdr's own monitor watches the sandbox, and the clock measures it.

Before the disaster the drill starts the monitor that ``pgdr monitor run`` and the agent run
(built by :mod:`pgdr.watch`, handed in as a :data:`MonitorFactory`: the watch layer sits above
the drills) over the sandbox, in a background thread, every ``interval`` seconds (production:
the runbook's 2 minutes). Each round is remembered: when it began and ended, and which of the
checks that detect a disaster failed. The detection ends when a round OPENS an incident in the
sandbox's incident store after the disaster; detection time = disaster → the incident's
``opened_at``. The last clean round before it and the first failing one bound the window in
which the damage happened; the recovery searches the WAL there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgdr.backup import Repository
from pgdr.config import PgdrSettings
from pgdr.core.log import logger
from pgdr.core.severity import Severity
from pgdr.incident.store import Incident
from pgdr.monitoring.checks import CheckResult
from pgdr.monitoring.monitor import Monitor
from pgdr.profile import Profile

log = logger(__name__)
# The checks whose failure is a disaster the drills rehearse: the server gone, integrity
# findings (the monitor runs and records `pgdr check`), rows fell against the snapshot.
DETECTING = ("database_up", "integrity", "rows_fell")
INTERVAL_S = 2.0
SEVERE = (Severity.P0, Severity.P1)  # a warning-level finding is no disaster


@dataclass(frozen=True)
class WatchTarget:
    """What the sandbox's monitor watches: the database, its records, repository and profile."""

    settings: PgdrSettings
    conninfo: str
    records: Path
    repository: Callable[[], Repository]
    profile: Profile
    environ: dict[str, str]
    interval_s: float = INTERVAL_S


MonitorFactory = Callable[[WatchTarget], Monitor]


@dataclass(frozen=True)
class Round:
    began: float  # wall-clock time
    ended: float
    failing: tuple[str, ...]  # the DETECTING checks that failed at P0/P1
    results: tuple[CheckResult, ...] = ()  # those checks' results

    @property
    def clean(self) -> bool:
        return not self.failing


@dataclass
class Detection:
    """The incident(s) the monitor opened after the disaster and the rounds around it."""

    incidents: list[Incident]
    detected_s: float  # disaster -> the first incident opened
    first_failing: Round
    last_clean: Round | None

    @property
    def incident(self) -> Incident:
        return self.incidents[0]

    @property
    def checks(self) -> list[str]:
        return [i.check for i in self.incidents]

    def result(self, check: str) -> CheckResult | None:
        """The failing result of ``check`` in the round that detected the disaster."""
        return next((r for r in self.first_failing.results if r.name == check), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident.id,
            "check": self.incident.check,
            "severity": self.incident.severity,
            "message": self.incident.message,
            "opened": [{"check": i.check, "severity": i.severity} for i in self.incidents],
            "seconds": round(self.detected_s, 3),
            "last_clean_round": _iso(self.last_clean.began) if self.last_clean else None,
            "first_failing_round": [_iso(self.first_failing.began), _iso(self.first_failing.ended)],
        }


@dataclass
class SandboxWatch:
    """The monitor's rounds in a background thread, until stopped."""

    monitor: Monitor
    rounds: list[Round] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _done: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None

    @property
    def interval_s(self) -> float:
        return self.monitor.config.interval_seconds

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pgdr-drill-monitor", daemon=True)
        self._thread.start()

    def stop(self, join: bool = True) -> None:
        """Stop after the round in progress (``join``: wait for it)."""
        self._stop.set()
        if join and self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.time()
            results: tuple[CheckResult, ...] = ()
            try:
                snapshot = self.monitor.run_once()
                results = tuple(c for c in snapshot.checks if c.name in DETECTING and not c.ok)
                failing = tuple(c.name for c in results if c.severity in SEVERE)
            except Exception as exc:  # a round that fails is said, never taken for clean
                log.warning("A drill monitor round failed: %s", exc)
                self.errors.append(str(exc))
                failing = ("round failed",)
            with self._done:
                self.rounds.append(Round(began, time.time(), failing, results))
                self._done.notify_all()
            self._stop.wait(self.interval_s)

    def _wait(self, until: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self._done:
            while not (found := until()):
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return None
                self._done.wait(min(left, 0.5))
            return found

    def wait_clean(self, since: float, timeout: float) -> Round | None:
        """Until a round that began at or after ``since`` found nothing (the baseline of the
        window)."""
        return self._wait(  # type: ignore[no-any-return]
            lambda: next((r for r in self.rounds if r.began >= since and r.clean), None), timeout
        )

    def wait_incident(self, disaster_at: float, timeout: float) -> Detection | None:
        """Until a round opened an incident (or raised one to P0/P1) after the wall-clock
        moment ``disaster_at``."""

        def raised() -> list[tuple[float, Incident]]:
            found = [
                (moment, i)
                for i in self.monitor.incidents.all()
                if (moment := _raised_at(i, disaster_at)) is not None
            ]
            found.sort(key=lambda m: (m[0], m[1].severity))
            if found and not any(r.ended >= found[0][0] for r in self.rounds):
                return []  # the round that raised it is still being recorded
            return found

        found: list[tuple[float, Incident]] | None = self._wait(raised, timeout)
        if not found:
            return None
        first = found[0][0]
        failing = next(r for r in self.rounds if r.ended >= first)
        clean = [r for r in self.rounds if r.clean and r.ended <= first]
        return Detection(
            [i for moment, i in found if moment == first],
            first - disaster_at,
            failing,
            clean[-1] if clean else None,
        )


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def _raised_at(incident: Incident, since: float) -> float | None:
    """When ``incident`` was opened, or escalated to P0/P1, at or after ``since``."""
    moments = [
        float(e["at"])
        for e in incident.events
        if float(e["at"]) >= since
        and (e["event"] == "opened" or (e["event"] == "escalated" and incident.severity in SEVERE))
    ]
    return min(moments, default=None)
