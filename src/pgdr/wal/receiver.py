"""The receiver's health: why pg_receivewal failed, until it streams again.

When pg_receivewal exits with an error (a full spool disk, a refused connection, a server
restart) the streamer restarts it with backoff, and meanwhile the server's replication slot
keeps every WAL segment, so nothing is lost, but nothing new is protected either. Saying
``streaming`` then would be a false "ok". :class:`ReceiverHealth` therefore:

* records the one-sentence cause (the error pg_receivewal printed in this run) and the time in
  the streamer's state (``receiver_error``, ``receiver_error_at``), and the state reads
  ``retrying`` instead of ``streaming``;
* opens the incident ``wal_receiver`` (P1) in the incident store;
* clears both only once the receiver really streams again: it runs and reports to the server
  (``write_lsn``) that it wrote the WAL up to where the server was when first seen after the
  failure (a receiver that fails again never gets there: it failed writing WAL the server
  already had).

pg_receivewal's output is read through a pipe (kept in memory, and appended to
``pg_receivewal.log`` in the spool when that can be written): on a full spool disk the log file
cannot take the error, the pipe still does.

A failed pre-allocation leaves a torn ``.partial`` (zeros, not a whole segment) that
pg_receivewal refuses to resume ("should be 0 or N bytes"): :func:`drop_torn_partials` removes
such a file when it holds nothing but zeros.

pg_receivewal resumes after the newest complete segment in the spool, or, when the uploader has
removed them all, at the slot's position; it tells the server what it flushed only every
second. A spool too small for the backlog would livelock: every restart fetches the same
segments from the slot again and fills the spool before the slot moves. After an exit,
:func:`release_sealed` therefore advances the (inactive) slot to the end of the newest segment
sealed in the repository, on the timeline the server writes; WAL the repository does not hold
is never released.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from pathlib import Path

import psycopg

from pgdr.core import runner
from pgdr.core import time as clock
from pgdr.core.errors import PgdrError
from pgdr.core.incidents import IncidentStore
from pgdr.core.severity import Severity
from pgdr.wal.names import format_lsn, is_partial
from pgdr.wal.server import connect, current_timeline
from pgdr.wal.stream_state import StreamState

CHECK = "wal_receiver"
ERROR_MARKERS = ("error:", "FATAL:", "fatal:")


KEEP_LINES = 50


def receiver_cause(lines: list[str]) -> str:
    """The first error pg_receivewal printed (the cause; "disconnected" follows it), else its
    last line."""
    lines = [ln.strip() for ln in lines if ln.strip()]
    errors = [ln for ln in lines if any(m in ln for m in ERROR_MARKERS)]
    if errors:
        return errors[0]
    return lines[-1] if lines else "it printed nothing"


def release_sealed(
    conninfo: str,
    slot: str,
    sealed: tuple[int, int] | None,
    log: logging.LoggerAdapter[logging.Logger],
) -> None:
    """Advance the inactive ``slot`` to ``sealed`` (timeline, end LSN) when it is behind."""
    if sealed is None:
        return
    timeline, end = sealed
    try:
        with connect(conninfo) as conn:
            if current_timeline(conn) != timeline:
                return
            row = conn.execute(
                "SELECT pg_replication_slot_advance(slot_name, %s::pg_lsn)"
                " FROM pg_replication_slots"
                " WHERE slot_name = %s AND NOT active AND restart_lsn < %s::pg_lsn",
                (format_lsn(end), slot, format_lsn(end)),
            ).fetchone()
    except (PgdrError, psycopg.Error) as exc:
        log.info("The slot %s stays where it is for now: %s", slot, str(exc).strip())
        return
    if row is not None:
        log.info(
            "The slot %s now starts at %s: the WAL before is sealed in the repository.",
            slot,
            format_lsn(end),
        )


class ReceiverOutput:
    """Drains pg_receivewal's output (so it never blocks on a full pipe) and keeps its tail."""

    def __init__(self, proc: runner.Process, logfile: Path) -> None:
        self.lines: deque[str] = deque(maxlen=KEEP_LINES)
        self._thread = threading.Thread(
            target=self._drain, args=(proc, logfile), name="pg_receivewal-output", daemon=True
        )
        self._thread.start()

    def _drain(self, proc: runner.Process, logfile: Path) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip())
            with contextlib.suppress(OSError), logfile.open("ab") as handle:
                handle.write(raw)

    def tail(self, wait_s: float = 2.0) -> list[str]:
        """The lines kept; after an exit, waits (briefly) for the last ones."""
        self._thread.join(wait_s)
        return list(self.lines)


def drop_torn_partials(
    spool: Path, segment_size: int, log: logging.LoggerAdapter[logging.Logger]
) -> None:
    """Remove ``.partial`` files of a wrong size that hold only zeros (a failed pre-allocation)."""
    for path in sorted(spool.iterdir()):
        if not is_partial(path.name):
            continue
        size = path.stat().st_size
        if size in (0, segment_size):
            continue
        with path.open("rb") as handle:
            empty = not handle.read().rstrip(b"\0")
        if empty:
            log.warning(
                "Removing %s from the spool: a pre-allocation that failed left %d bytes of "
                "zeros, which pg_receivewal would refuse to resume.",
                path.name,
                size,
            )
            path.unlink()


class ReceiverHealth:
    """Tracks pg_receivewal's failures in ``status`` and the incident store."""

    def __init__(
        self,
        status: StreamState,
        incidents: IncidentStore | None,
        logfile: Path,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.status = status
        self.incidents = incidents
        self.logfile = logfile
        self.log = log
        self.output: ReceiverOutput | None = None
        self._target: int | None = None  # the server position to reach before clearing
        if incidents is not None:
            with contextlib.suppress(PgdrError, OSError):
                open_one = incidents.current(CHECK)
                if open_one is not None:  # a previous run's failure: still pending
                    status.receiver_error = open_one.message
                    status.receiver_error_at = open_one.opened_at

    def started(self, proc: runner.Process) -> None:
        """pg_receivewal was just started (output to a pipe): read what it says."""
        self.output = ReceiverOutput(proc, self.logfile)
        self.status.state = "retrying" if self.status.receiver_error else "streaming"

    def cause(self) -> str:
        """Why the last pg_receivewal ended, from its own output."""
        return receiver_cause(self.output.tail() if self.output else [])

    def failed(self, code: int | None, backoff: float) -> None:
        """pg_receivewal exited: record why (an exit with code 0 is a stop, not a failure)."""
        cause = self.cause()
        self.log.warning("pg_receivewal exited (%s): %s; restarting in %g s.", code, cause, backoff)
        if not code:
            return
        if self.status.receiver_error is None or self.status.receiver_error_at is None:
            self.status.receiver_error_at = time.time()
        since = clock.iso(self.status.receiver_error_at)
        sentence = (
            f"pg_receivewal has been failing since {since} ({cause.rstrip('.')}); pgdr retries "
            "and the server's replication slot keeps the WAL meanwhile."
        )
        self.status.receiver_error = sentence
        self.status.state = "retrying"
        self._target = None
        if self.incidents is not None:
            with contextlib.suppress(PgdrError, OSError):
                self.incidents.raise_(CHECK, Severity.P1, sentence)

    def observed(self, running: bool, reachable: bool) -> None:
        """After the server was observed: clear the error once the receiver streams again."""
        if self.status.receiver_error is None or not reachable:
            return
        server, written = self.status.server_lsn, self.status.write_lsn
        if self._target is None:
            self._target = server
            return
        if not running or written is None or self._target is None or written < self._target:
            return
        self.log.info("pg_receivewal streams again; the receiver error is cleared.")
        self.status.receiver_error = None
        self.status.receiver_error_at = None
        self.status.state = "streaming"
        if self.incidents is not None:
            with contextlib.suppress(PgdrError, OSError):
                self.incidents.resolve(CHECK, "pg_receivewal streams again.")
