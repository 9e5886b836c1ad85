"""What the WAL streamer says about itself: the ``streamer`` state in the repository.

The streamer rewrites this state every heartbeat (``HEARTBEAT_S``); ``pgdr wal status`` and
``pgdr status`` read it. Invariant: ``state`` is ``streaming`` only while pg_receivewal runs and
no receiver error is pending; from the moment pg_receivewal exits with an error until it
streams again, ``receiver_error`` holds the one-sentence cause and ``receiver_error_at`` when it
happened (:mod:`pgdr.wal.receiver`).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from pgdr.wal.names import format_lsn


@dataclass
class StreamState:
    state: str = "starting"
    synchronous: bool = False  # pg_receivewal --synchronous: it confirms every flush at once
    application: str | None = None  # the application_name it connects with
    quorum_with: list[str] = field(default_factory=list)  # --quorum-with: others it is ANY 1 of
    slot: str | None = None
    walsender_pid: int | None = None  # the server's walsender for our slot, when connected
    timeline: int | None = None
    segments_uploaded: int = 0
    last_segment: str | None = None
    partial: str | None = None
    partial_read_at: float | None = None
    received_lsn: int | None = None
    server_lsn: int | None = None
    server_seen_at: float | None = None  # when server_lsn and flush_lsn were asked for
    server_timeline: int | None = None  # the timeline server_lsn is on
    flush_lsn: int | None = None
    write_lsn: int | None = None  # what pg_receivewal reports written to the spool
    sync_state: str | None = None  # our walsender's, in pg_stat_replication
    namesakes: int = 0  # other walsenders connected under our application name
    degraded: bool = False
    restarts: int = 0
    repository_error: str | None = None
    receiver_error: str | None = None
    receiver_error_at: float | None = None
    primary: str | None = None
    following_since: float | None = None
    started_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        lag = None
        if self.server_lsn is not None and self.received_lsn is not None:
            lag = max(0, self.server_lsn - self.received_lsn)
        return {
            "state": self.state,
            "synchronous": self.synchronous,
            "application": self.application,
            "quorum_with": self.quorum_with,
            "slot": self.slot,
            "walsender_pid": self.walsender_pid,
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
            "namesakes": self.namesakes,
            "degraded": self.degraded,
            "restarts": self.restarts,
            "repository_error": self.repository_error,
            "receiver_error": self.receiver_error,
            "receiver_error_at": self.receiver_error_at,
            "primary": self.primary,
            "following_since": self.following_since,
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
        }
