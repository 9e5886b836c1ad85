"""``archive_command`` and ``restore_command``: one WAL file into or out of the repository."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from pgdr.core.errors import CheckFailed, RuntimeFailure
from pgdr.storage import ObjectNotFound
from pgdr.wal.archive import PushResult, WalArchive, read_segment_header
from pgdr.wal.names import is_partial, is_segment


def segment_identity(path: Path) -> tuple[int, int] | None:
    """(system identifier, segment size) from a segment's first page, None when it has none."""
    with path.open("rb") as handle:
        header = read_segment_header(handle.read(64))
    if header is None:
        return None
    return header.system_identifier, header.segment_size


def push_file(archive: WalArchive, path: Path) -> PushResult:
    """Archive ``path`` (as PostgreSQL's %p); idempotent for identical content."""
    name = path.name
    try:
        data = path.read_bytes()
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise RuntimeFailure(f"Cannot read {path}: {exc.strerror}.") from exc
    result = archive.push(name, data)
    if is_segment(name):
        archive.put_state("archive", {"last_segment": name, "mtime": mtime, "at": time.time()})
    return result


def fetch_bytes(archive: WalArchive, name: str, allow_partial: bool = False) -> bytes:
    """A WAL file's content, verified; a full segment may come from its ``.partial``."""
    return fetch_segment(archive, name, allow_partial)[0]


def fetch_segment(archive: WalArchive, name: str, allow_partial: bool) -> tuple[bytes, int]:
    """Like :func:`fetch_bytes`, with how many bytes of it are WAL: all of a complete file,
    the received part of a ``.partial`` (the rest is zeros, which PostgreSQL replays up to)."""
    try:
        data = archive.get(name)
        return data, len(data)
    except ObjectNotFound:
        if not (allow_partial and is_segment(name)):
            raise
    data = archive.get_partial(name)
    return data.ljust(archive.segment_size, b"\0"), len(data)


def fetch_file(archive: WalArchive, name: str, dest: Path, allow_partial: bool = False) -> int:
    """Write WAL file ``name`` to ``dest`` atomically; CheckFailed (exit 1) when absent."""
    if is_partial(name):
        name, allow_partial = name[:24], True
    try:
        data = fetch_bytes(archive, name, allow_partial)
    except ObjectNotFound:
        raise CheckFailed(f"{name} is not in the repository.") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".pgdr-fetch-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(dest)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise RuntimeFailure(f"Cannot write {dest}: {exc.strerror}.") from exc
    return len(data)
