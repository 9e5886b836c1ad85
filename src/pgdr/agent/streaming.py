"""The agent's WAL streaming of one database: a :class:`~pgdr.wal.stream.Streamer`, kept running.

The streamer has its own restart backoff for pg_receivewal; this supervisor restarts the
streamer itself (with backoff up to ``connect_retry_max_s``) when it stops on an error, e.g. a
repository it cannot open. It starts once the database is identified (its system identifier
names the spool and the WAL archive) and never for a refused database. Its log lines and the
streamer's are prefixed with the database's name; incidents go to the database's own store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from pgdr.agent.database import DatabaseHandle
from pgdr.cluster import installation_for_major
from pgdr.core.errors import PgdrError
from pgdr.core.incidents import IncidentStore
from pgdr.core.log import logger
from pgdr.wal.archive import repository_archive
from pgdr.wal.server import ServerInfo
from pgdr.wal.stream import Streamer, StreamOptions

log = logger("pgdr.agent")


class StreamSupervisor:
    """Keeps one database's streamer running until ``stop``."""

    def __init__(self, handle: DatabaseHandle, max_backoff_s: float) -> None:
        self.handle = handle
        self.max_backoff_s = max_backoff_s
        self.streamer: Streamer | None = None

    @property
    def streaming(self) -> bool:
        return self.streamer is not None and self.streamer.status.state == "streaming"

    def run(
        self,
        stop: threading.Event,
        identified: threading.Event,
        info: Callable[[], ServerInfo | None],
        refused: Callable[[], bool],
    ) -> None:
        """Restart the streamer with backoff whenever it stops on an error."""
        name = self.handle.name
        backoff = 1.0
        while not stop.is_set():
            server = info()
            if not identified.wait(1.0) or server is None:
                if refused():
                    return
                continue
            try:
                self._streamer(server).run(stop)
            except PgdrError as exc:
                log.warning(
                    "%s: WAL streaming stopped: %s; retrying in %g s.", name, exc.message, backoff
                )
            except Exception:
                log.exception("%s: WAL streaming crashed; retrying in %g s.", name, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    def _streamer(self, info: ServerInfo) -> Streamer:
        h = self.handle
        archive = repository_archive(h.repository(), info.system_identifier, info.segment_size)
        options = StreamOptions(
            conninfo=h.target().conninfo,
            spool=h.settings.home / "wal-spool" / str(info.system_identifier),
            installation=installation_for_major(info.major, h.settings.pg_bin),
            label=h.name,
        )
        self.streamer = Streamer(options, archive, IncidentStore(h.records / "incidents"))
        return self.streamer
