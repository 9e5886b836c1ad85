"""The drill's workload writer: small transactions committed continuously, each one recorded.

A tick is one ``INSERT INTO drill_ticks`` committed on its own; the writer records the tick's id
and commit time only once the server acknowledged the commit. After a disaster the ticks that
were acknowledged but are missing from the recovered database are the data loss (RPO), counted
rather than guessed. Failed or unacknowledged ticks are not counted as lost: the application
was told they failed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from pgdr.core.connect import connect

TICKS_TABLE = """
CREATE TABLE IF NOT EXISTS drill_ticks (
    id bigint PRIMARY KEY,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


@dataclass
class Tick:
    id: int
    committed_at: datetime


@dataclass
class WorkloadWriter:
    """A thread committing one tick every ``interval`` seconds until stopped."""

    conninfo: str
    interval: float = 0.02
    acked: list[Tick] = field(default_factory=list)
    failures: int = 0
    last_error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _next_id: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def prepare(self) -> None:
        with connect(self.conninfo, autocommit=True) as conn:
            conn.execute(TICKS_TABLE)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pgdr-drill-workload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self) -> list[Tick]:
        with self._lock:
            return list(self.acked)

    def wait_for_ticks(self, n: int, timeout: float = 60) -> None:
        """Until at least ``n`` more ticks are acknowledged (the workload really runs)."""
        goal = len(self.snapshot()) + n
        deadline = time.monotonic() + timeout
        while len(self.snapshot()) < goal:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the workload committed nothing for {timeout:g} s")
            time.sleep(0.02)

    def _connect(self) -> psycopg.Connection[Any]:
        return connect(self.conninfo, autocommit=True, timeout_s=2, raw_errors=True)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                tick_id = self._next_id
                row = conn.execute(
                    "INSERT INTO drill_ticks (id) VALUES (%s) RETURNING committed_at", (tick_id,)
                ).fetchone()
                self._next_id += 1
                if row is not None:
                    with self._lock:
                        self.acked.append(Tick(tick_id, row[0]))
            except psycopg.Error as exc:
                self.failures += 1
                self.last_error = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                read_only = isinstance(exc, psycopg.errors.ReadOnlySqlTransaction)
                if conn is not None and (conn.closed or conn.broken or read_only):
                    # a session opened in read-only mode stays so: reconnect to see it end
                    conn.close()
                    conn = None
                self._next_id += 1  # an unacknowledged id is never reused
                self._stop.wait(0.1)
                continue
            self._stop.wait(self.interval)
        if conn is not None:
            conn.close()


@dataclass
class LossCount:
    """Acknowledged ticks missing from a database, and the time span they cover."""

    acknowledged: int
    missing: int
    seconds: float
    newest_acknowledged: str | None
    newest_present: str | None
    acked: list[Tick] = field(default_factory=list, repr=False)  # every acknowledged tick
    lost: list[Tick] = field(default_factory=list, repr=False)  # those missing

    def as_dict(self) -> dict[str, Any]:
        return {
            "acknowledged_ticks": self.acknowledged,
            "missing_ticks": self.missing,
            "seconds": round(self.seconds, 3),
            "newest_acknowledged": self.newest_acknowledged,
            "newest_present": self.newest_present,
        }


def count_loss(conninfo: str, acked: list[Tick]) -> LossCount:
    """Compare the acknowledged ticks with those present at ``conninfo``.

    ``seconds`` is the span from the newest acknowledged tick still present to the newest
    missing one: how much acknowledged work was lost, in time (0 when nothing is missing).
    """
    with connect(conninfo, autocommit=True) as conn:
        present = {int(r[0]) for r in conn.execute("SELECT id FROM drill_ticks").fetchall()}
    missing = [t for t in acked if t.id not in present]
    kept = [t for t in acked if t.id in present]
    newest_kept = max((t.committed_at for t in kept), default=None)
    newest_missing = max((t.committed_at for t in missing), default=None)
    seconds = 0.0
    if newest_missing is not None:
        start = newest_kept or min(t.committed_at for t in missing)
        seconds = max(0.0, (newest_missing - start).total_seconds())
    newest_acked = max((t.committed_at for t in acked), default=None)
    return LossCount(
        acknowledged=len(acked),
        missing=len(missing),
        seconds=seconds,
        newest_acknowledged=newest_acked.isoformat() if newest_acked else None,
        newest_present=newest_kept.isoformat() if newest_kept else None,
        acked=list(acked),
        lost=missing,
    )
