"""``pg_waldump``'s listing of WAL records, read in blocks of whole lines.

Shared by ``pgdr wal find`` (rows changed per transaction) and ``restore --delta --by-wal``
(the pages the WAL changed); nothing here connects to a server.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

from pgdr.core import runner
from pgdr.core.errors import RuntimeFailure

WALDUMP_BLOCK = 1 << 20  # bytes of pg_waldump's listing read at a time


def waldump_lines(
    tool: Path, directory: Path, args: list[str], recycled: bool = False
) -> Iterator[str]:
    """``pg_waldump``'s records, a line each (see :func:`waldump_text`)."""
    for text in waldump_text(tool, directory, args, recycled):
        yield from io.StringIO(text, newline="\n")  # split at "\n" only, as pg_waldump ends lines


def waldump_text(
    tool: Path, directory: Path, args: list[str], recycled: bool = False
) -> Iterator[str]:
    """``pg_waldump``'s records (``args``: the segments or LSNs to read), as text in blocks of
    whole lines (read a MiB at a time: a million records are a few hundred MB of text, and a
    Python step per line cost seconds); the end of valid WAL (zeros of a partial segment, a
    segment still being written, a missing segment, and with ``recycled`` an old segment
    renamed for reuse, as a server's ``pg_wal`` holds) ends the listing, anything else is an
    error."""
    proc = runner.start([tool, "--path", str(directory), *args], env=dict(os.environ, TZ="UTC"))
    assert proc.stdout is not None and proc.stderr is not None
    try:
        rest = b""
        while read := proc.stdout.read(WALDUMP_BLOCK):
            block = rest + read
            cut = block.rfind(b"\n") + 1  # 0: no whole line yet
            if cut:
                yield block[:cut].decode("utf-8", errors="replace")
            rest = block[cut:]
        if rest:
            yield rest.decode("utf-8", errors="replace")
        error = proc.stderr.read().decode("utf-8", errors="replace")
        code = proc.wait()
    finally:
        runner.stop(proc)
    harmless = (
        "invalid record length",
        "could not find file",
        "missing contrecord",
        "invalid magic number 0000",
        "record with incorrect prev-link",
        *(["unexpected pageaddr"] if recycled else []),
    )
    if code != 0 and not any(h in error for h in harmless):
        raise RuntimeFailure(runner.sentence("pg_waldump", error))
