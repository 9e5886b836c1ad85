"""``pgdr wal stream``: pg_receivewal through a slot, supervised, uploading into the repository.

One process, two duties:

* a supervisor runs ``pg_receivewal -n`` (the binaries matching the server) into a local spool,
  through the physical replication slot ``pgdr`` so the server keeps every segment until pgdr
  has it; when pg_receivewal exits (server restart, network) it is restarted with backoff, and
  it resumes from the spool or the slot, so an outage only delays;
* an uploader seals each completed segment and timeline history into the repository and then
  removes it from the spool, and re-uploads the segment being written (``.partial``, trimmed of
  its zero padding) whenever it grows, at most every ``partial_interval`` seconds and at once when
  the connection drops. A total loss of the server therefore loses at most that interval in
  asynchronous mode. If the repository is unreachable the spool simply grows and is drained
  when it is back.

``synchronous=True`` runs pg_receivewal with ``--synchronous`` (flush each write, report the
flush at once) and lists its application name in ``synchronous_standby_names``: a commit
returns only once its WAL is on pgdr's disk (RPO 0). While the streamer is down commits block;
``degrade_after`` seconds of that and the streamer switches the server to asynchronous commits
itself, loudly, records an incident, and switches back when it has caught up.

A multi-host connection string (a Patroni cluster) is resolved to the current primary before
each start of pg_receivewal, which is given that one server. When the primary goes away
(switchover, crash) or turns into a standby, pg_receivewal is restarted against the new primary
from the spool's position on the old timeline; PostgreSQL's walsender streams the old timeline
up to the switch point, pg_receivewal fetches the new timeline's history file and follows it, and
the uploader puts both into the repository. The slot must exist on the new primary (Patroni's
permanent slot); when it does not, pgdr creates it and says so, and what could not be fetched
shows as a gap in ``pgdr wal status``. A spool position the new primary never had (WAL the old
primary wrote but no replica received: an asynchronous failover's loss) is dropped from the
spool after being uploaded; the repository keeps it on the old timeline. Two primaries on one
timeline (a split brain) are refused and open a P0 incident until a single primary is back.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg

from pgdr.backup.repository import Repository
from pgdr.cluster import PgInstallation, installation_for_major
from pgdr.config import PgdrSettings
from pgdr.core import runner
from pgdr.core.connect import client_environment, hosts
from pgdr.core.errors import ConfigError, PgdrError, RuntimeFailure
from pgdr.core.incidents import IncidentStore
from pgdr.core.log import logger
from pgdr.core.severity import Severity
from pgdr.wal.archive import WalArchive, repository_archive
from pgdr.wal.receiver import ReceiverHealth, drop_torn_partials, release_sealed
from pgdr.wal.server import (
    DEFAULT_APPLICATION,
    DEFAULT_SLOT,
    connect,
    current_timeline,
    ensure_slot,
    primary_or_incident,
    resolve_primary,
    server_address,
    server_info,
    with_application_name,
)
from pgdr.wal.stream_state import StreamState
from pgdr.wal.syncguard import (
    DEGRADED,
    NAMESAKES,
    SYNC_SWITCH,
    SyncGuard,
    repository_incident,
    sync_names_value,
)
from pgdr.wal.uploader import HEARTBEAT_S, SpoolUploader, trimmed

__all__ = [
    "DEGRADED",
    "SYNC_SWITCH",
    "StreamOptions",
    "StreamRequest",
    "StreamState",
    "Streamer",
    "stream_until_stopped",
    "sync_names_value",
    "trimmed",
]

log = logger(__name__)

PR_SET_PDEATHSIG = 1
MAX_BACKOFF_S = 2.0
NOT_IN_HISTORY = ("is not in this server's history", "ahead of the WAL flush position")
RECEIVER_LOG = "pg_receivewal.log"
SHORT_PAGE_HEADER, LONG_PAGE_HEADER = 24, 40  # a WAL page's header; a segment's first page's

# The server's WAL insert position (what any returned commit is within, synchronous_commit off
# included), what our receiver (by its slot) had written and flushed, its walsender's sync
# state, the timeline, the WAL page and segment sizes, and our walsender's pid.
SERVER_POSITIONS = """
SELECT i.lsn - '0/0'::pg_lsn, r.flush, r.sync_state,
       r.written, pg_walfile_name(i.lsn), current_setting('wal_block_size')::int,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), r.pid
FROM (SELECT pg_current_wal_insert_lsn() AS lsn) i
LEFT JOIN (SELECT p.flush_lsn - '0/0'::pg_lsn AS flush, p.write_lsn - '0/0'::pg_lsn AS written,
                  p.pid, p.sync_state
           FROM pg_stat_replication p JOIN pg_replication_slots s ON s.active_pid = p.pid
           WHERE s.slot_name = %(slot)s LIMIT 1) r ON true
"""


def record_end(insert: int, block: int, segment: int) -> int:
    """Where the server's last WAL record ends, from its insert position: a position just past
    a page's header (where the next record will start) stands for the page's start."""
    if insert % segment == LONG_PAGE_HEADER:
        return insert - LONG_PAGE_HEADER
    if insert % block == SHORT_PAGE_HEADER:
        return insert - SHORT_PAGE_HEADER
    return insert


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """pg_receivewal must not outlive a streamer killed with -9 (it would hold the slot)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Labelled(logging.LoggerAdapter[logging.Logger]):
    """Log lines prefixed with the database they are about (``NAME: ...``), if it has one."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        label = (self.extra or {}).get("database")
        return (f"{label}: {msg}" if label else msg), kwargs


@dataclass
class StreamOptions:
    conninfo: str
    spool: Path
    installation: PgInstallation
    slot: str = DEFAULT_SLOT
    application: str = DEFAULT_APPLICATION
    synchronous: bool = False
    quorum_with: list[str] = field(default_factory=list)
    degrade_after: float | None = None
    partial_interval: float = 0.25
    label: str | None = None  # the database's name in the agent: prefixes every log line


class Streamer:
    """Runs until ``stop`` is set (SIGTERM/SIGINT in the CLI)."""

    def __init__(
        self,
        options: StreamOptions,
        archive: WalArchive,
        incidents: IncidentStore | None = None,
    ) -> None:
        self.o = options
        self.archive = archive
        self.incidents = incidents
        self.status = StreamState(
            synchronous=options.synchronous,
            application=options.application,
            quorum_with=list(options.quorum_with),
            slot=options.slot,
        )
        self.proc: runner.Process | None = None
        self._lock_handle: IO[str] | None = None
        self.server = options.conninfo  # the primary's single-host conninfo once resolved
        self.log = Labelled(log, {"database": options.label})
        self.health = ReceiverHealth(self.status, incidents, options.spool / RECEIVER_LOG, self.log)
        self.sync = SyncGuard(archive, self.status, incidents, self.log)
        self.uploader = SpoolUploader(options.spool, archive, self.status, self.log, self._running)

    def _running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ----- the spool --------------------------------------------------------------------------
    def _lock_spool(self) -> None:
        self.o.spool.mkdir(parents=True, exist_ok=True)
        self.o.spool.chmod(0o700)
        handle = (self.o.spool / ".lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RuntimeFailure(
                f"Another `pgdr wal stream` already uses the spool {self.o.spool}."
            ) from None
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = handle

    def upload_spool(self, final: bool = False) -> None:
        """Push completed files (then drop them) and the partial segment when it changed."""
        self.uploader.upload(final)

    # ----- pg_receivewal ----------------------------------------------------------------------
    def _follow_primary(self) -> None:
        """Resolve the primary (multi-host) and make sure the slot exists there."""
        self.server = primary_or_incident(self.o.conninfo, self.incidents)
        address = server_address(self.server)
        if ensure_slot(self.server, self.o.slot) and self.status.primary is not None:
            message = (
                f"The slot {self.o.slot} was missing on the new primary {address} and was created "
                "now: WAL written since the previous server's last position may not be fetchable "
                "(`pgdr wal status` shows any gap). Declare the slot permanent in Patroni "
                "(`pgdr wal setup --patroni`)."
            )
            self.log.warning(message)
            self._incident("wal-slot-missing", message, Severity.P1)
        if self.status.primary not in (None, address):
            self.log.warning("The primary moved: following %s now.", address)
            self._incident("wal-primary-moved", f"the streamer follows the new primary {address}")
        if self.status.primary != address:
            self.status.following_since = time.time()
        self.status.primary = address

    def _start_receiver(self) -> runner.Process:
        self._follow_primary()
        # The password goes through the environment: argv is readable by every local user.
        client_conninfo, env = client_environment(
            with_application_name(self.server, self.o.application)
        )
        args = [
            str(self.o.installation.tool("pg_receivewal")),
            "-D",
            str(self.o.spool),
            "-d",
            client_conninfo,
            "--slot",
            self.o.slot,
            "-n",
            "-s",
            "1",
        ]
        if self.o.synchronous:
            args.append("--synchronous")
        return runner.start(
            args,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec=_die_with_parent,
        )

    # ----- the server side --------------------------------------------------------------------
    def _observe_server(self) -> bool:
        """Positions and sync state from the server; False when it cannot be reached."""
        asked_at = time.time()  # the positions read are at least those of this moment
        try:
            with connect(self.server) as conn:
                if conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,):
                    self._leave_standby()
                    return False
                named = conn.execute(NAMESAKES, {"application": self.o.application}).fetchall()
                row = conn.execute(SERVER_POSITIONS, {"slot": self.o.slot}).fetchone()
                assert row is not None
                self.status.server_timeline = int(str(row[4])[:8], 16)
                self.status.server_lsn = record_end(int(row[0]), int(row[5]), int(row[6]))
                self.status.flush_lsn = None if row[1] is None else int(row[1])
                self.status.sync_state = row[2]
                self.status.write_lsn = None if row[3] is None else int(row[3])
                self.status.walsender_pid = None if row[7] is None else int(row[7])
                self.status.namesakes = sum(1 for (pid,) in named if pid != row[7])
                self.status.server_seen_at = asked_at
                if self.o.synchronous:
                    wanted = sync_names_value(self.o.application, self.o.quorum_with)
                    self.sync.manage(conn, wanted, self.o.degrade_after, self.status.namesakes)
        except (PgdrError, psycopg.Error):
            return False
        return True

    def _leave_standby(self) -> None:
        """The server streamed from is a standby now (demoted): restart on the new primary.

        Only with a list of hosts: a single host that is a standby is what the user named.
        """
        if len(hosts(self.o.conninfo)) < 2:
            return
        if self.proc is not None and self.proc.poll() is None:
            self.log.warning("%s is a standby now; leaving it.", server_address(self.server))
            runner.stop(self.proc, grace_s=10, sig=signal.SIGINT)

    def _drop_foreign_partials(self) -> None:
        """After "not in this server's history": the spool's old-timeline WAL is uploaded; drop it.

        It is WAL the new primary never had (an asynchronous failover's loss); pg_receivewal
        then starts from the slot's position on the new primary.
        """
        if not any(marker in self.health.cause() for marker in NOT_IN_HISTORY):
            return
        if self.status.repository_error:
            return
        for path in self.o.spool.glob("*.partial"):
            self.log.warning(
                "Dropping %s from the spool: the new primary's history does not contain it "
                "(WAL written by the old primary after the last replica's position; it stays "
                "in the repository on its timeline).",
                path.name,
            )
            path.unlink()

    def _incident(self, kind: str, message: str, severity: Severity | None = None) -> None:
        """A record next to the WAL; with a severity also an incident in the incident store."""
        repository_incident(self.archive, kind, message)
        if severity is not None and self.incidents is not None:
            with contextlib.suppress(PgdrError, OSError):
                self.incidents.raise_(kind, severity, message)

    def _heartbeat(self) -> None:
        with contextlib.suppress(PgdrError):
            self.archive.put_state("streamer", self.status.as_dict())

    # ----- the loop ---------------------------------------------------------------------------
    def _settle_spool(self) -> None:
        """Upload what a previous run left, and drop a partial of another timeline.

        After a restore the new cluster (same system identifier) writes a new timeline; an old
        partial in the spool would make pg_receivewal resume on the old one.
        """
        self.upload_spool(final=True)
        if self.status.repository_error:
            return
        try:
            with connect(resolve_primary(self.o.conninfo)) as conn:
                timeline = current_timeline(conn)
        except PgdrError:
            return
        for path in self.o.spool.glob("*.partial"):
            if int(path.name[:8], 16) != timeline:
                self.log.info(
                    "Dropping %s from the spool: it is in the repository and "
                    "the server now writes timeline %d.",
                    path.name,
                    timeline,
                )
                path.unlink()

    def run(self, stop: threading.Event) -> None:
        self._lock_spool()
        self._settle_spool()
        backoff = 0.5
        next_start = 0.0
        next_beat = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if self.proc is None and now >= next_start:
                    try:
                        self.proc = self._start_receiver()
                        self.health.started(self.proc)
                        self.log.info("pg_receivewal started (slot %s).", self.o.slot)
                    except PgdrError as exc:
                        self.status.state = "server unreachable"
                        self.log.warning("Waiting for the server: %s", exc.message)
                        next_start = now + backoff
                        backoff = min(backoff * 2, MAX_BACKOFF_S)
                if self.proc is not None and self.proc.poll() is not None:
                    code = self.proc.returncode
                    self.proc = None
                    self.status.state = "disconnected"
                    self.status.restarts += 1
                    self.upload_spool(final=True)
                    self._drop_foreign_partials()
                    drop_torn_partials(self.o.spool, self.archive.segment_size, self.log)
                    if not self.status.repository_error:
                        release_sealed(self.server, self.o.slot, self.uploader.sealed, self.log)
                    self.health.failed(code, backoff)
                    next_start = time.monotonic() + backoff
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    self._heartbeat()
                    continue
                self.upload_spool()
                if now >= next_beat:
                    reachable = self._observe_server()
                    running = self.proc is not None
                    self.health.observed(running, reachable)
                    if reachable and running and self.status.flush_lsn is not None:
                        backoff = 0.5
                    self._heartbeat()
                    next_beat = now + HEARTBEAT_S
                stop.wait(self.o.partial_interval)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        if self.proc is not None:
            runner.stop(self.proc, grace_s=10, sig=signal.SIGINT)
        self.proc = None
        self.upload_spool(final=True)
        self.status.state = "stopped"
        self._heartbeat()
        if self._lock_handle is not None:
            self._lock_handle.close()


@dataclass(frozen=True)
class StreamRequest:
    """What ``pgdr wal stream`` was asked for; the rest is learnt from the server."""

    spool: Path | None = None
    slot: str = DEFAULT_SLOT
    application: str = DEFAULT_APPLICATION
    synchronous: bool = False
    quorum_with: tuple[str, ...] = ()
    degrade_after: float | None = None
    partial_interval: float = 0.25


def stream_until_stopped(
    settings: PgdrSettings,
    repo: Repository,
    conninfo: str,
    ask: StreamRequest,
    stop: threading.Event,
) -> None:
    """Stream the server's WAL into ``repo`` until ``stop`` is set; incidents go to PGDR_HOME."""
    if ask.degrade_after is not None and not ask.synchronous:
        raise ConfigError("--degrade-after only makes sense with --synchronous.")
    info = server_info(conninfo)
    archive = repository_archive(repo, info.system_identifier, info.segment_size)
    options = StreamOptions(
        conninfo=conninfo,
        spool=ask.spool or settings.home / "wal-spool" / str(info.system_identifier),
        installation=installation_for_major(info.major, settings.pg_bin),
        slot=ask.slot,
        application=ask.application,
        synchronous=ask.synchronous,
        quorum_with=list(ask.quorum_with),
        degrade_after=ask.degrade_after,
        partial_interval=ask.partial_interval,
    )
    log.info(
        "Streaming WAL of system %s (PostgreSQL %s) into %s%s.",
        info.system_identifier,
        info.major,
        archive.store.url,
        " synchronously" if ask.synchronous else "",
    )
    Streamer(options, archive, IncidentStore.at_home(settings.home)).run(stop)
    log.info("Stopped; everything received is in the repository.")
