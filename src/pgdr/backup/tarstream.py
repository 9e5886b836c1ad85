"""A streaming reader of the tar archives ``pg_basebackup -Ft -D -`` writes.

The archive is fed in arbitrary pieces (the chunks of a backup) and never held whole: the reader
reports each member's header, its data in pieces, and its end. Backups use it to hash every file
while streaming; restores use it to extract into a new directory. It understands ustar headers
(what PostgreSQL writes) plus GNU long names and pax ``path``/``size`` records for robustness.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgdr.core.errors import RuntimeFailure

BLOCK = 512


class TarFormatError(RuntimeFailure):
    """The stream is not a tar archive we can read."""


@dataclass(frozen=True)
class TarMember:
    """One archive member: its path, type (``file``, ``dir``, ``symlink``), size and mode."""

    path: str
    kind: str
    size: int
    mode: int
    mtime: int
    linkname: str
    data_offset: int  # where its data starts in the uncompressed archive stream


def _octal(field: bytes) -> int:
    field = field.rstrip(b"\0 ").lstrip(b" ")
    if not field:
        return 0
    if field[0] & 0x80:  # GNU base-256 for big numbers
        return int.from_bytes(field, "big") & ~(0x80 << (8 * (len(field) - 1)))
    try:
        return int(field, 8)
    except ValueError:
        raise TarFormatError(f"Malformed tar header field {field!r}.") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_ok(header: bytes) -> bool:
    stored = _octal(header[148:156])
    computed = sum(header[:148]) + 32 * 8 + sum(header[156:])
    return stored == computed


_KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"5": "dir", b"2": "symlink", b"1": "hardlink"}


class TarReader:
    """Push-style tar parser: call :meth:`feed` with consecutive pieces, then :meth:`close`.

    Subclasses override :meth:`on_member`, :meth:`on_data` and :meth:`on_member_end`.
    """

    def __init__(self) -> None:
        self.offset = 0  # bytes of the archive consumed so far
        self._header = bytearray()
        self._remaining = 0  # data bytes left in the current member
        self._padding = 0  # padding bytes left after the current member
        self._special: bytearray | None = None  # collecting a long-name / pax record
        self._special_kind = b""
        self._pending_name: str | None = None
        self._pending_size: int | None = None
        self._member: TarMember | None = None
        self.finished = False
        self._zero_blocks = 0

    # ----- hooks --------------------------------------------------------------------------
    def on_member(self, member: TarMember) -> None:
        """A member starts (its data follows through :meth:`on_data`)."""

    def on_data(self, member: TarMember, data: memoryview) -> None:
        """A piece of the current member's data."""

    def on_member_end(self, member: TarMember) -> None:
        """The current member's data is complete."""

    # ----- parsing ------------------------------------------------------------------------
    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        pos = 0
        end = len(view)
        while pos < end:
            if self._remaining:
                take = min(self._remaining, end - pos)
                piece = view[pos : pos + take]
                if self._special is not None:
                    self._special += piece
                elif self._member is not None:
                    self.on_data(self._member, piece)
                self._remaining -= take
                pos += take
                self.offset += take
                if not self._remaining:
                    self._end_member()
                continue
            if self._padding:
                take = min(self._padding, end - pos)
                self._padding -= take
                pos += take
                self.offset += take
                continue
            take = min(BLOCK - len(self._header), end - pos)
            self._header += view[pos : pos + take]
            pos += take
            self.offset += take
            if len(self._header) == BLOCK:
                header = bytes(self._header)
                self._header.clear()
                self._parse_header(header)

    def close(self) -> None:
        """The stream ended: it must have ended cleanly (after the archive's end marker)."""
        if not self.finished and (self._remaining or self._header or self._member is not None):
            raise TarFormatError("The backup's archive stream ends in the middle of a file.")
        if not self.finished and self.offset == 0:
            raise TarFormatError("The backup's archive stream is empty.")

    def _parse_header(self, header: bytes) -> None:
        if self.finished:
            return
        if header == bytes(BLOCK):
            self._zero_blocks += 1
            if self._zero_blocks >= 1:
                self.finished = True
            return
        if not _checksum_ok(header):
            raise TarFormatError(f"Bad tar header checksum at offset {self.offset - BLOCK}.")
        typeflag = header[156:157]
        size = _octal(header[124:136])
        if typeflag in (b"L", b"x", b"g"):
            self._special = bytearray()
            self._special_kind = typeflag
            self._remaining = size
            self._padding = (-size) % BLOCK
            if size == 0:
                self._end_member()
            return
        name = _text(header[0:100])
        prefix = _text(header[345:500]) if header[257:262] == b"ustar" else ""
        if prefix:
            name = f"{prefix}/{name}"
        if self._pending_name is not None:
            name = self._pending_name
            self._pending_name = None
        if self._pending_size is not None:
            size = self._pending_size
            self._pending_size = None
        kind = _KINDS.get(typeflag, "other")
        if kind != "file":
            size = 0 if kind != "other" else size
        member = TarMember(
            path=name.rstrip("/") if kind == "dir" else name,
            kind=kind,
            size=size,
            mode=_octal(header[100:108]) & 0o7777,
            mtime=_octal(header[136:148]),
            linkname=_text(header[157:257]),
            data_offset=self.offset,
        )
        self._member = member
        self.on_member(member)
        self._remaining = size
        self._padding = (-size) % BLOCK
        if size == 0:
            self._end_member()

    def _end_member(self) -> None:
        if self._special is not None:
            record = bytes(self._special)
            self._special = None
            if self._special_kind == b"L":
                self._pending_name = record.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif self._special_kind == b"x":
                self._parse_pax(record)
            return
        member = self._member
        self._member = None
        if member is not None:
            self.on_member_end(member)

    def _parse_pax(self, record: bytes) -> None:
        pos = 0
        while pos < len(record):
            space = record.find(b" ", pos)
            if space < 0:
                break
            length = int(record[pos:space])
            entry = record[space + 1 : pos + length - 1]
            key, _, value = entry.partition(b"=")
            if key == b"path":
                self._pending_name = value.decode("utf-8", "surrogateescape")
            elif key == b"size":
                self._pending_size = int(value)
            pos += length
