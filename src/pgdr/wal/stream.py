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
import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg

from pgdr.backup.repository import Repository
from pgdr.cluster import PgInstallation, installation_for_major
from pgdr.config import PgdrSettings
from pgdr.core import runner
from pgdr.core import time as clock
from pgdr.core.connect import client_environment, hosts
from pgdr.core.errors import ConfigError, PgdrError, RuntimeFailure
from pgdr.core.incidents import IncidentStore
from pgdr.core.log import logger
from pgdr.core.severity import Severity
from pgdr.wal.archive import WalArchive, repository_archive
from pgdr.wal.names import (
    format_lsn,
    is_history,
    is_partial,
    is_segment,
    parse_segment,
    partial_piece,
)
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
    set_system,
    setting,
    with_application_name,
)

log = logger(__name__)
DEGRADED = "wal-sync-degraded"

PR_SET_PDEATHSIG = 1
SYNC_SWITCH = "sync-switch"  # state written by `pgdr wal sync on|off`
MAX_BACKOFF_S = 2.0
NOT_IN_HISTORY = ("is not in this server's history", "ahead of the WAL flush position")
HEARTBEAT_S = 1.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """pg_receivewal must not outlive a streamer killed with -9 (it would hold the slot)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def sync_names_value(application: str, quorum_with: list[str]) -> str:
    """The ``synchronous_standby_names`` that makes ``application`` (or a quorum) synchronous."""
    if not quorum_with:
        return f'"{application}"'
    members = ", ".join(f'"{n}"' for n in [application, *quorum_with])
    return f"ANY 1 ({members})"


def trimmed(data: bytes) -> bytes:
    """A partial segment without its zero padding (pg_receivewal pre-allocates the file)."""
    return data.rstrip(b"\0")


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


@dataclass
class StreamState:
    state: str = "starting"
    timeline: int | None = None
    segments_uploaded: int = 0
    last_segment: str | None = None
    partial: str | None = None
    partial_read_at: float | None = None
    received_lsn: int | None = None
    server_lsn: int | None = None
    flush_lsn: int | None = None
    sync_state: str | None = None
    degraded: bool = False
    restarts: int = 0
    repository_error: str | None = None
    primary: str | None = None
    following_since: float | None = None
    started_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        lag = None
        if self.server_lsn is not None and self.received_lsn is not None:
            lag = max(0, self.server_lsn - self.received_lsn)
        return {
            "state": self.state,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "timeline": self.timeline,
            "segments_uploaded": self.segments_uploaded,
            "last_segment": self.last_segment,
            "partial": self.partial,
            "partial_read_at": self.partial_read_at,
            "received_lsn": None if self.received_lsn is None else format_lsn(self.received_lsn),
            "server_lsn": None if self.server_lsn is None else format_lsn(self.server_lsn),
            "server_flush_lsn_of_streamer": None
            if self.flush_lsn is None
            else format_lsn(self.flush_lsn),
            "lag_bytes": lag,
            "sync_state": self.sync_state,
            "degraded": self.degraded,
            "restarts": self.restarts,
            "repository_error": self.repository_error,
            "primary": self.primary,
            "following_since": self.following_since,
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
        }


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
        self.status = StreamState()
        self.proc: runner.Process | None = None
        self._partial_sig: tuple[str, int] | None = None
        self._partial_stat: tuple[str, int, int] | None = None
        self._partial_end: dict[str, int] = {}  # segment -> bytes uploaded in this run
        self._partial_recorded = 0.0
        self._down_since: float | None = None
        self._lock_handle: IO[str] | None = None
        self.server = options.conninfo  # the primary's single-host conninfo once resolved

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
        try:
            names = sorted(p.name for p in self.o.spool.iterdir())
        except FileNotFoundError:
            return
        try:
            for name in names:
                path = self.o.spool / name
                if is_history(name) or is_segment(name):
                    data = path.read_bytes()
                    self.archive.push(name, data)
                    if is_segment(name):
                        self.archive.delete_partial(name)
                        self._partial_end.pop(name, None)
                        self.status.segments_uploaded += 1
                        self.status.last_segment = name
                        self.status.timeline = int(name[:8], 16)
                        seg = parse_segment(name, self.archive.segment_size)
                        end = (seg.segno + 1) * self.archive.segment_size
                        self.status.received_lsn = max(self.status.received_lsn or 0, end)
                    path.unlink()
            partials = [n for n in names if is_partial(n)]
            if partials:
                self._upload_partial(partials[-1], force=final)
            self.status.repository_error = None
        except PgdrError as exc:
            if self.status.repository_error != exc.message:
                log.warning("upload failed, keeping WAL in the spool: %s", exc.message)
            self.status.repository_error = exc.message

    def _upload_partial(self, name: str, force: bool) -> None:
        """Upload what is new in the partial segment; otherwise confirm it is still current.

        Only the bytes past the last upload go up (a piece ``<segment>.partial.<offset>``), so
        the cost follows the WAL rate, not the segment's fill. The first upload of a run starts
        at 0 and replaces older pieces. The recorded ``read_at`` says "the repository holds
        everything pgdr had received at this moment", which ends the recovery window; while
        nothing new arrives it is refreshed every heartbeat, so a quiet database's window still
        reaches the present.
        """
        path = self.o.spool / name
        segment = name[:24]
        read_at = time.time()
        try:
            stat = path.stat()
        except FileNotFoundError:
            return
        quick = (name, stat.st_mtime_ns, stat.st_size)
        if quick == self._partial_stat and not force:
            self._confirm_partial(name, read_at)
            return
        start = self._partial_end.get(segment, 0)
        try:
            with path.open("rb") as handle:
                handle.seek(start)
                new = trimmed(handle.read())
        except FileNotFoundError:
            return  # completed meanwhile: uploaded as a segment next round
        self._partial_stat = quick
        if not new and segment in self._partial_end:
            self._confirm_partial(name, read_at)
            return
        piece = partial_piece(segment, start)
        self.archive.push(piece, new)
        if segment not in self._partial_end:
            self.archive.delete_partial(segment, keep=piece)
        end = start + len(new)
        self._partial_end[segment] = end
        self._partial_sig = (name, end)
        seg = parse_segment(segment, self.archive.segment_size)
        self.status.partial = name
        self.status.timeline = seg.timeline
        self.status.received_lsn = max(
            self.status.received_lsn or 0, seg.start_lsn(self.archive.segment_size) + end
        )
        self._record_partial(name, read_at, end)

    def _record_partial(self, name: str, read_at: float, size: int) -> None:
        self.status.partial_read_at = read_at
        self._partial_recorded = time.monotonic()
        self.archive.put_state("partial", {"name": name, "read_at": read_at, "bytes": size})

    def _confirm_partial(self, name: str, read_at: float) -> None:
        running = self.proc is not None and self.proc.poll() is None
        if running and time.monotonic() - self._partial_recorded >= HEARTBEAT_S:
            size = self._partial_sig[1] if self._partial_sig else 0
            self._record_partial(name, read_at, size)

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
            log.warning(message)
            self._incident("wal-slot-missing", message, Severity.P1)
        if self.status.primary not in (None, address):
            log.warning("The primary moved: following %s now.", address)
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
        logfile = (self.o.spool / "pg_receivewal.log").open("ab")
        try:
            return runner.start(
                args, env=env, stdout=logfile, stderr=logfile, preexec=_die_with_parent
            )
        finally:
            logfile.close()

    def _receiver_reason(self) -> str:
        try:
            return runner.last_line((self.o.spool / "pg_receivewal.log").read_bytes())
        except OSError:
            return "no log"

    # ----- the server side --------------------------------------------------------------------
    def _observe_server(self) -> bool:
        """Positions and sync state from the server; False when it cannot be reached."""
        try:
            with connect(self.server) as conn:
                if conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,):
                    self._leave_standby()
                    return False
                row = conn.execute(
                    "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn,"
                    " (SELECT flush_lsn - '0/0'::pg_lsn FROM pg_stat_replication"
                    "  WHERE application_name = %s ORDER BY backend_start DESC LIMIT 1),"
                    " (SELECT sync_state FROM pg_stat_replication"
                    "  WHERE application_name = %s ORDER BY backend_start DESC LIMIT 1)",
                    (self.o.application, self.o.application),
                ).fetchone()
                assert row is not None
                self.status.server_lsn = int(row[0])
                self.status.flush_lsn = None if row[1] is None else int(row[1])
                self.status.sync_state = row[2]
                if self.o.synchronous:
                    self._manage_sync(conn)
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
            log.warning("%s is a standby now; leaving it.", server_address(self.server))
            runner.stop(self.proc, grace_s=10, sig=signal.SIGINT)

    def _drop_foreign_partials(self) -> None:
        """After "not in this server's history": the spool's old-timeline WAL is uploaded; drop it.

        It is WAL the new primary never had (an asynchronous failover's loss); pg_receivewal
        then starts from the slot's position on the new primary.
        """
        if not any(marker in self._receiver_reason() for marker in NOT_IN_HISTORY):
            return
        if self.status.repository_error:
            return
        for path in self.o.spool.glob("*.partial"):
            log.warning(
                "Dropping %s from the spool: the new primary's history does not contain it "
                "(WAL written by the old primary after the last replica's position; it stays "
                "in the repository on its timeline).",
                path.name,
            )
            path.unlink()

    def _operator_off(self) -> bool:
        """Whether an operator said `pgdr wal sync off` (the streamer then leaves it off)."""
        try:
            switch = self.archive.get_state(SYNC_SWITCH)
        except PgdrError:
            return False
        return bool(switch and switch.get("off"))

    def _manage_sync(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        if self._operator_off():
            return
        wanted = sync_names_value(self.o.application, self.o.quorum_with)
        current = setting(conn, "synchronous_standby_names")
        connected = self.status.flush_lsn is not None
        now = time.monotonic()
        if connected:
            self._down_since = None
        elif self._down_since is None:
            self._down_since = now
        if self.status.degraded:
            caught_up = (
                connected
                and self.status.server_lsn is not None
                and self.status.flush_lsn is not None
                and self.status.server_lsn - self.status.flush_lsn < self.archive.segment_size
            )
            if caught_up:
                set_system(conn, "synchronous_standby_names", wanted)
                self.status.degraded = False
                log.info("Caught up: synchronous commits are back on (RPO 0).")
                self._incident("wal-sync-restored", "the streamer caught up; commits wait again")
                if self.incidents is not None:
                    with contextlib.suppress(PgdrError, OSError):
                        self.incidents.resolve(
                            DEGRADED, "The streamer caught up; commits wait again."
                        )
            return
        if current != wanted and connected:
            set_system(conn, "synchronous_standby_names", wanted)
            log.info("synchronous_standby_names = '%s': commits now wait for pgdr.", wanted)
            return
        if (
            self.o.degrade_after is not None
            and self._down_since is not None
            and now - self._down_since >= self.o.degrade_after
            and current == wanted
        ):
            set_system(conn, "synchronous_standby_names", "")
            self.status.degraded = True
            message = (
                f"The streamer has been disconnected for {self.o.degrade_after:g} s; switched "
                "the server to ASYNCHRONOUS commits so the application is not blocked. RPO is "
                "no longer 0 until pgdr catches up."
            )
            log.warning(message)
            self._incident(DEGRADED, message, Severity.P1)

    def _incident(self, kind: str, message: str, severity: Severity | None = None) -> None:
        moment = clock.now()
        stamp = moment.strftime("%Y%m%dT%H%M%SZ")
        record = {"kind": kind, "message": message, "at": clock.iso(moment), "severity": "critical"}
        with contextlib.suppress(PgdrError):
            self.archive.store.put(
                f"incidents/{stamp}-{kind}.json", json.dumps(record, indent=2).encode()
            )
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
                log.info(
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
                        self.status.state = "streaming"
                        log.info("pg_receivewal started (slot %s).", self.o.slot)
                    except PgdrError as exc:
                        self.status.state = "server unreachable"
                        log.warning("Waiting for the server: %s", exc.message)
                        next_start = now + backoff
                        backoff = min(backoff * 2, MAX_BACKOFF_S)
                if self.proc is not None and self.proc.poll() is not None:
                    code = self.proc.returncode
                    self.proc = None
                    self.status.state = "disconnected"
                    self.status.restarts += 1
                    self.upload_spool(final=True)
                    self._drop_foreign_partials()
                    log.warning(
                        "pg_receivewal exited (%s): %s; restarting in %g s.",
                        code,
                        self._receiver_reason(),
                        backoff,
                    )
                    next_start = time.monotonic() + backoff
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    self._heartbeat()
                    continue
                self.upload_spool()
                if now >= next_beat:
                    reachable = self._observe_server()
                    if reachable and self.proc is not None and self.status.flush_lsn is not None:
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
