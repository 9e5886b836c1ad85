"""The streamer's uploader: the spool's WAL into the repository, sealed.

Completed segments and timeline histories are pushed and then removed from the spool; the
segment being written (``.partial``) is pushed piece by piece as it grows (only the new bytes,
trimmed of pg_receivewal's zero padding), and while nothing new arrives its ``read_at`` is
confirmed every ``HEARTBEAT_S`` so a quiet database's recovery window still reaches the
present. A repository error keeps everything in the spool (``repository_error`` in the state)
and the next round tries again. ``sealed`` is the (timeline, end LSN) of the newest segment
pushed, what the slot may let go of (:func:`pgdr.wal.receiver.release_sealed`).
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
                        self.status.received_lsn = max(self.status.received_lsn or 0, end)
                        self.sealed = (seg.timeline, end)
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
        at 0 and replaces older pieces. The recorded ``read_at`` says "the repository holds
        everything pgdr had received at this moment", which ends the recovery window; while
        nothing new arrives it is refreshed every heartbeat, so a quiet database's window still
        reaches the present.
        """
        path = self.spool / name
        segment = name[:24]
        read_at = time.time()
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
        self.status.received_lsn = max(
            self.status.received_lsn or 0, seg.start_lsn(self.archive.segment_size) + end
        )
        self._record_partial(name, read_at, end)

    def _record_partial(self, name: str, read_at: float, size: int) -> None:
        self.status.partial_read_at = read_at
        self._recorded = time.monotonic()
        self.archive.put_state("partial", {"name": name, "read_at": read_at, "bytes": size})

    def _confirm_due(self) -> bool:
        """Whether the recorded read time should be refreshed (pg_receivewal runs, and a
        heartbeat has passed since the last record)."""
        return self.running() and time.monotonic() - self._recorded >= HEARTBEAT_S

    def _confirm_partial(self, name: str, read_at: float) -> None:
        if self._confirm_due():
            size = self._sig[1] if self._sig else 0
            self._record_partial(name, read_at, size)
