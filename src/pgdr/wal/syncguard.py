"""Synchronous commits to pgdr, and the way out when the streamer cannot keep them.

With ``synchronous=True`` the streamer lists its application name in
``synchronous_standby_names`` once it is connected. While it is disconnected commits block;
after ``degrade_after`` seconds of that :class:`SyncGuard` switches the server to asynchronous
commits itself, loudly (log, repository record, P1 incident ``wal-sync-degraded``), and back
once the streamer has caught up to within one segment. An operator's ``pgdr wal sync off``
(the ``sync-switch`` state) is always respected: the guard then touches nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

import psycopg

from pgdr.core import time as clock
from pgdr.core.errors import PgdrError
from pgdr.core.incidents import IncidentStore
from pgdr.core.severity import Severity
from pgdr.wal.archive import WalArchive
from pgdr.wal.server import set_system, setting
from pgdr.wal.status import STALE_HEARTBEAT_S
from pgdr.wal.stream_state import StreamState

DEGRADED = "wal-sync-degraded"
UNCHANGEABLE = (  # where a value comes from that ALTER SYSTEM cannot override
    "command line",
    "override",
)
SYNC_SWITCH = "sync-switch"  # state written by `pgdr wal sync on|off`

# The walsenders under our application name that PostgreSQL could wait for instead of ours: it
# picks streaming ones, and one catching up is about to be; one still starting up may be ours
# before it takes its slot, and one sending a base backup is never picked. The streamer reads
# this before its slot (pgdr.wal.stream.SERVER_POSITIONS): a walsender takes its slot before it
# catches up, so ours, if listed here, holds the slot by then and is told apart (in one query
# the slot was read first, and ours taking it and catching up in between made it "another").
NAMESAKES = """
SELECT pid FROM pg_stat_replication
WHERE application_name = %(application)s AND state IN ('catchup', 'streaming', 'stopping')
"""


def sync_names_value(application: str, quorum_with: list[str]) -> str:
    """The ``synchronous_standby_names`` that makes ``application`` (or a quorum) synchronous."""
    if not quorum_with:
        return f'"{application}"'
    members = ", ".join(f'"{n}"' for n in [application, *quorum_with])
    return f"ANY 1 ({members})"


def repository_incident(archive: WalArchive, kind: str, message: str) -> None:
    """A record of what the streamer did, next to the WAL (``incidents/<stamp>-<kind>.json``)."""
    moment = clock.now()
    stamp = moment.strftime("%Y%m%dT%H%M%SZ")
    record = {"kind": kind, "message": message, "at": clock.iso(moment), "severity": "critical"}
    with contextlib.suppress(PgdrError):
        archive.store.put(f"incidents/{stamp}-{kind}.json", json.dumps(record, indent=2).encode())


class SyncGuard:
    """Keeps ``synchronous_standby_names`` right for a synchronous streamer."""

    def __init__(
        self,
        archive: WalArchive,
        status: StreamState,
        incidents: IncidentStore | None,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.archive = archive
        self.status = status
        self.incidents = incidents
        self.log = log
        self._down_since: float | None = None
        self._overridden: str | None = None  # the source that pins the setting, once reported
        self._namesakes_said = False  # other walsenders under our name, once reported

    def operator_off(self) -> bool:
        """Whether an operator said `pgdr wal sync off` (the streamer then leaves it off)."""
        try:
            switch = self.archive.get_state(SYNC_SWITCH)
        except PgdrError:
            return False
        return bool(switch and switch.get("off"))

    def manage(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        wanted: str,
        degrade_after: float | None,
        namesakes: int = 0,
    ) -> None:
        """One round: ``namesakes`` is how many other walsenders connect under our name."""
        if self.operator_off():
            return
        current = setting(conn, "synchronous_standby_names")
        if current != wanted and self._pinned(conn, current):
            return
        if self._shared(conn, current, wanted, namesakes):
            return
        connected = self.status.flush_lsn is not None
        now = time.monotonic()
        if connected:
            self._down_since = None
        elif self._down_since is None:
            self._down_since = now
        if self.status.degraded:
            self._maybe_restore(conn, wanted, connected)
            return
        if current != wanted and connected:
            set_system(conn, "synchronous_standby_names", wanted)
            self.log.info("synchronous_standby_names = '%s': commits now wait for pgdr.", wanted)
            return
        if (
            degrade_after is not None
            and self._down_since is not None
            and now - self._down_since >= degrade_after
            and current == wanted
        ):
            self._degrade(conn, degrade_after)

    def _pinned(self, conn: psycopg.Connection[tuple[Any, ...]], current: str) -> bool:
        """Whether ``synchronous_standby_names`` is set where ALTER SYSTEM cannot change it (the
        server's command line): then commits never wait for pgdr, and that is said once, as a
        degrade (P1, RPO not 0), instead of claiming every second that they now wait."""
        row = conn.execute(
            "SELECT source FROM pg_settings WHERE name = 'synchronous_standby_names'"
        ).fetchone()
        source = str(row[0]) if row else ""
        if source not in UNCHANGEABLE:
            self._overridden = None
            return False
        if self._overridden != source:
            self._overridden = source
            self.status.degraded = True
            message = (
                f"synchronous_standby_names is '{current}', set on the server's {source}, which "
                "ALTER SYSTEM cannot change: commits do NOT wait for pgdr and RPO is not 0. "
                "Remove it from the server's start options to stream synchronously."
            )
            self._announce(message)
        return True

    def _shared(
        self, conn: psycopg.Connection[tuple[Any, ...]], current: str, wanted: str, namesakes: int
    ) -> bool:
        """Whether other walsenders connect under our application name. PostgreSQL may then
        make commits wait for one of them instead of pgdr (an asynchronous one only confirms
        now and then: every commit would stall), so commits are switched to asynchronous and
        that is said once, as a degrade (P1, RPO not 0), until pgdr is alone under its name;
        the usual catching up then turns them back on."""
        if not namesakes:
            self._namesakes_said = False
            return False
        if current == wanted:
            set_system(conn, "synchronous_standby_names", "")
        if not self._namesakes_said:
            self._namesakes_said = True
            self.status.degraded = True
            application = self.status.application
            self._announce(
                f'{namesakes} other walsender(s) connect as "{application}" too, and '
                "PostgreSQL could make commits wait for them instead of pgdr: commits do NOT "
                "wait for pgdr and RPO is not 0 until it is alone under its name (give the "
                "others another application_name)."
            )
        return True

    def _announce(self, message: str) -> None:
        """Record, log and raise the degrade incident (P1) with ``message``."""
        repository_incident(self.archive, DEGRADED, message)  # recorded before it is said
        self.log.warning(message)
        if self.incidents is not None:
            with contextlib.suppress(PgdrError, OSError):
                self.incidents.raise_(DEGRADED, Severity.P1, message)

    def _maybe_restore(
        self, conn: psycopg.Connection[tuple[Any, ...]], wanted: str, connected: bool
    ) -> None:
        s = self.status
        caught_up = (
            connected
            and s.server_lsn is not None
            and s.flush_lsn is not None
            and s.server_lsn - s.flush_lsn < self.archive.segment_size
        )
        if not caught_up:
            return
        set_system(conn, "synchronous_standby_names", wanted)
        s.degraded = False
        self.log.info("Caught up: synchronous commits are back on (RPO 0).")
        repository_incident(
            self.archive, "wal-sync-restored", "the streamer caught up; commits wait again"
        )
        if self.incidents is not None:
            with contextlib.suppress(PgdrError, OSError):
                self.incidents.resolve(DEGRADED, "The streamer caught up; commits wait again.")

    def _degrade(self, conn: psycopg.Connection[tuple[Any, ...]], degrade_after: float) -> None:
        set_system(conn, "synchronous_standby_names", "")
        self.status.degraded = True
        self._announce(
            f"The streamer has been disconnected for {degrade_after:g} s; switched "
            "the server to ASYNCHRONOUS commits so the application is not blocked. RPO is "
            "no longer 0 until pgdr catches up."
        )


def _streamer_refusal(streamer: dict[str, Any] | None, application: str) -> str | None:
    """What in this repository's streamer state makes synchronous commits block, if anything."""
    start = "start one with `pgdr wal stream --synchronous`, which turns them on itself"
    if (
        streamer is None
        or streamer.get("state") == "stopped"
        or time.time() - float(streamer.get("heartbeat_at") or 0) >= STALE_HEARTBEAT_S
    ):
        return (
            "No `pgdr wal stream` of this repository is running, so every commit would wait "
            f"for a standby that is not there; {start}"
        )
    if not streamer.get("synchronous"):
        return (
            "The streamer of this repository is asynchronous: it confirms its flushes only "
            "now and then, so every commit would wait; restart it as "
            "`pgdr wal stream --synchronous`, which turns synchronous commits on itself"
        )
    if streamer.get("application") != application:
        return (
            f'The streamer of this repository connects as "{streamer.get("application")}", '
            f'not "{application}", so every commit would wait for a standby that is not '
            "there; give --application its name"
        )
    return None


def sync_on_refusal(
    conn: psycopg.Connection[tuple[Any, ...]], streamer: dict[str, Any] | None, application: str
) -> str | None:
    """Why ``synchronous_standby_names = '"application"'`` would block every commit, or None.

    Commits only go on when the one walsender named ``application`` is this repository's
    streamer (its state, ``streamer``, names that walsender's pid), running with
    ``--synchronous`` (pg_receivewal confirms every flush at once) and connected now. Another
    walsender of that name (another repository's streamer) could be chosen to wait for.
    """
    refusal = _streamer_refusal(streamer, application)
    if refusal or streamer is None:
        return refusal
    # ours among every walsender of the name; the others among those PostgreSQL could pick
    others = {int(pid) for (pid,) in conn.execute(NAMESAKES, {"application": application})}
    connected = conn.execute(
        "SELECT 1 FROM pg_stat_replication WHERE pid = %s AND application_name = %s",
        (streamer.get("walsender_pid"), application),
    ).fetchone()
    if connected is None:
        return (
            "The synchronous streamer of this repository is not connected to the server now, "
            "so every commit would wait; check `pgdr wal status` and try again once it streams"
        )
    if others - {streamer.get("walsender_pid")}:
        return (
            f'Another streamer (not this repository\'s) is connected as "{application}" too, '
            "and PostgreSQL could make every commit wait for it; give one of them another "
            "--application"
        )
    return None
