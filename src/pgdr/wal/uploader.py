"""The streamer's uploader: the spool's WAL into the repository, sealed.

Completed segments and timeline histories are pushed and then removed from the spool; the
segment being written (``.partial``) is pushed piece by piece as it grows (only the new bytes,
trimmed of pg_receivewal's zero padding). With each piece, and every ``HEARTBEAT_S`` while
nothing new arrives, the state records ``read_at``: the newest moment at which the repository
is known to have held everything the server had written, the end of the recovery window. It is
proven by the streamer's observations of the server (its WAL position, asked at a known time,
is at or below what the repository holds), never assumed: a receiver that is alive but
receives nothing (stopped, or cut off by a network black hole) leaves it where it was, so the
window stops and the lag shows. A repository error keeps everything in the spool
(``repository_error`` in the state) and the next round tries again. ``sealed`` is the
(timeline, end LSN) of the newest segment pushed, what the slot may let go of
(:func:`pgdr.wal.receiver.release_sealed`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from pgdr.core.errors import PgdrError
from pgdr.wal.archive import WalArchive
from pgdr.wal.names import is_history, is_partial, is_segment, parse_segment, partial_piece
from pgdr.wal.stream_state import StreamState

HEARTBEAT_S = 1.0
WATCHED = 600  # observations of the server kept until the repository holds their position


def trimmed(data: bytes) -> bytes:
    """A partial segment without its zero padding (pg_receivewal pre-allocates the file)."""
    return data.rstrip(b"\0")


class SpoolUploader:
    """Uploads one spool; ``running`` says whether pg_receivewal runs (to confirm partials)."""

    def __init__(
        self,
        spool: Path,
        archive: WalArchive,
        status: StreamState,
        log: logging.LoggerAdapter[logging.Logger],
        running: Callable[[], bool],
    ) -> None:
        self.spool = spool
        self.archive = archive
        self.status = status
        self.log = log
        self.running = running
        self._sig: tuple[str, int] | None = None
        self._stat: tuple[str, int, int] | None = None
        self._ends: dict[str, int] = {}  # segment -> bytes uploaded in this run
        self._recorded = 0.0
        self._held: dict[int, int] = {}  # timeline -> end of the WAL uploaded on it
        # the server's positions not yet held: (time, timeline, LSN); and the newest report of
        # what the receiver had written into the spool: (time, timeline, LSN)
        self._watched: list[tuple[float, int, int]] = []
        self._written: tuple[float, int, int] | None = None
        self._seen_at: float | None = None  # the last observation taken in
        self._held_at: float | None = None  # the newest moment proven held
        self.sealed: tuple[int, int] | None = None  # (timeline, end) of the newest segment up

    def upload(self, final: bool = False) -> None:
        """Push completed files (then drop them) and the partial segment when it changed."""
        try:
            names = sorted(p.name for p in self.spool.iterdir())
        except FileNotFoundError:
            return
        try:
            for name in names:
                path = self.spool / name
                if is_history(name) or is_segment(name):
                    data = path.read_bytes()
                    self.archive.push(name, data)
                    if is_segment(name):
                        self.archive.delete_partial(name)
                        self._ends.pop(name, None)
                        self.status.segments_uploaded += 1
                        self.status.last_segment = name
                        self.status.timeline = int(name[:8], 16)
                        seg = parse_segment(name, self.archive.segment_size)
                        end = (seg.segno + 1) * self.archive.segment_size
                        self.sealed = (seg.timeline, end)
                        self._uploaded(seg.timeline, end)
                    path.unlink()
            partials = [n for n in names if is_partial(n)]
            if partials:
                self._upload_partial(partials[-1], force=final)
            self.status.repository_error = None
        except PgdrError as exc:
            if self.status.repository_error != exc.message:
                self.log.warning("upload failed, keeping WAL in the spool: %s", exc.message)
            self.status.repository_error = exc.message

    def _upload_partial(self, name: str, force: bool) -> None:
        """Upload what is new in the partial segment; otherwise confirm it is still current.

        Only the bytes past the last upload go up (a piece ``<segment>.partial.<offset>``), so
        the cost follows the WAL rate, not the segment's fill. The first upload of a run starts
        at 0 and replaces older pieces. The recorded ``read_at`` (see the module's docstring)
        ends the recovery window; while nothing new arrives it moves on every heartbeat as the
        streamer's observations prove it, so a quiet database's window still reaches the
        present.
        """
        path = self.spool / name
        segment = name[:24]
        read_at = time.time()
        self._take_observation()
        try:
            stat = path.stat()
        except FileNotFoundError:
            return
        quick = (name, stat.st_mtime_ns, stat.st_size)
        if quick == self._stat and not force and not self._confirm_due():
            return
        # Unchanged by its size and mtime, the file is still read before the window is said to
        # reach now: a write in the same clock tick as the last read leaves the mtime as it was
        # on kernels with coarse timestamps (before Linux 6.13), and its bytes would stay in
        # the spool while the repository claimed them.
        start = self._ends.get(segment, 0)
        try:
            with path.open("rb") as handle:
                handle.seek(start)
                new = trimmed(handle.read())
        except FileNotFoundError:
            return  # completed meanwhile: uploaded as a segment next round
        self._stat = quick
        if not new and segment in self._ends:
            self._confirm_partial(name, read_at)
            return
        piece = partial_piece(segment, start)
        self.archive.push(piece, new)
        if segment not in self._ends:
            self.archive.delete_partial(segment, keep=piece)
        end = start + len(new)
        self._ends[segment] = end
        self._sig = (name, end)
        seg = parse_segment(segment, self.archive.segment_size)
        self.status.partial = name
        self.status.timeline = seg.timeline
        self._uploaded(seg.timeline, seg.start_lsn(self.archive.segment_size) + end)
        self._record_partial(name, self._held_until(read_at), end)

    def _record_partial(self, name: str, held_at: float | None, size: int) -> None:
        self.status.partial_read_at = held_at
        self._recorded = time.monotonic()
        self.archive.put_state("partial", {"name": name, "read_at": held_at, "bytes": size})

    def _uploaded(self, timeline: int, end: int) -> None:
        """The repository now holds WAL up to ``end`` on ``timeline``."""
        self._held[timeline] = max(self._held.get(timeline, 0), end)
        self.status.received_lsn = max(self.status.received_lsn or 0, end)

    def _take_observation(self) -> None:
        """Take in the streamer's newest observation of the server, once."""
        seen, tli = self.status.server_seen_at, self.status.server_timeline
        if seen is None or tli is None or seen == self._seen_at:
            return
        self._seen_at = seen
        if self.status.server_lsn is not None:  # the newest WATCHED, for a receiver stuck long
            self._watched = [*self._watched[-WATCHED + 1 :], (seen, tli, self.status.server_lsn)]
        written = self.status.write_lsn or self.status.flush_lsn  # written: in the page cache
        if written is not None:
            self._written = (seen, tli, written)

    def _held_until(self, read_at: float) -> float | None:
        """The newest moment at which the repository held all the server had written, now that
        the spool was read at ``read_at`` and everything read is up.

        Held, on each timeline: what was uploaded, and what the receiver had reported written at
        an observation before the read (it was in the spool when it was read). An observation of
        the server's position on a timeline at or below what is held on it proves its moment
        (on its timeline only: after a failover the new timeline's WAL from the fork on must be
        up, whatever the old one holds)."""
        held = dict(self._held)
        if self._written is not None and self._written[0] < read_at:
            _seen, tli, lsn = self._written
            held[tli] = max(held.get(tli, 0), lsn)
        proven = [seen for seen, tli, lsn in self._watched if lsn <= held.get(tli, -1)]
        if proven:
            self._held_at = max(self._held_at or 0.0, *proven)
            self._watched = [o for o in self._watched if o[0] > self._held_at]
        return self._held_at

    def _confirm_due(self) -> bool:
        """Whether the recorded read time should be refreshed (pg_receivewal runs, and a
        heartbeat has passed since the last record)."""
        return self.running() and time.monotonic() - self._recorded >= HEARTBEAT_S

    def _confirm_partial(self, name: str, read_at: float) -> None:
        """Nothing new in the partial: record a newer proven moment, if there is one."""
        if not self._confirm_due():
            return
        held_at = self._held_until(read_at)
        if held_at is not None and held_at != self.status.partial_read_at:
            size = self._sig[1] if self._sig else 0
            self._record_partial(name, held_at, size)
