"""Reading a stored dump back: every chunk checked, the whole archive's SHA-256 compared, and
the plaintext fed to the matching ``pg_restore`` on its stdin.

The plaintext never lands in a shared place: ``pg_restore`` reads it from a pipe, and its output
(a table's rows, a TOC listing) goes to a private (0700) temporary directory that is removed
afterwards. A damaged chunk stops the read with the chunk's number and why.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pgdr.backup.chunks import DamagedBackup, fetch_chunk, private_dir
from pgdr.backup.manifest import DUMPS, PG_DUMP_KINDS, Manifest
from pgdr.backup.repository import Repository
from pgdr.cluster import PgInstallation
from pgdr.core import runner
from pgdr.core.errors import RuntimeFailure
from pgdr.core.runner import error_line
from pgdr.crypto import DataKey
from pgdr.logical.tools import DIRECTORY_SUFFIX, binaries_for


@dataclass(frozen=True)
class OpenDump:
    """A dump whose manifest was authenticated, with its data key."""

    repo: Repository
    manifest: Manifest
    data_key: DataKey

    @property
    def id(self) -> str:
        return self.manifest.id

    def pg_restore_installation(self) -> PgInstallation:
        return binaries_for(self.manifest.pg_major, f"Dump {self.id}")

    def pg_restore(self) -> Path:
        return self.pg_restore_installation().tool("pg_restore")

    @property
    def directory_format(self) -> bool:
        """A ``pg_dump -Fd`` dump, stored as a tar stream of its directory."""
        files = self.manifest.files
        return len(files) == 1 and files[0].path.endswith(DIRECTORY_SUFFIX)


def open_dump(
    repo: Repository, dump_id: str, latest_of: Collection[str] = PG_DUMP_KINDS
) -> OpenDump:
    """The dump (or export) ``dump_id``; ``latest`` is the newest of the kinds ``latest_of``
    (a pg_dump by default: never an export)."""
    resolved = repo.resolve_id(dump_id, area=DUMPS, kinds=latest_of)
    manifest = repo.read_manifest(resolved, authenticate=False, area=DUMPS)
    data_key = manifest.authenticate(repo.master_key, f"of dump {resolved} in {repo.name}")
    return OpenDump(repo, manifest, data_key)


def plaintext(dump: OpenDump) -> Iterator[bytes]:
    """The archive's bytes, chunk by chunk, each checked; a dump's (single file's) SHA-256 is
    compared at the end (an export's files are checked one by one by their reader)."""
    digest = hashlib.sha256()
    for index in range(len(dump.manifest.chunks)):
        piece = fetch_chunk(dump.repo, dump.manifest, dump.data_key, index)
        digest.update(piece)
        yield piece
    files = dump.manifest.files
    if len(files) == 1 and digest.hexdigest() != files[0].digest:
        raise DamagedBackup(f"Dump {dump.id} does not match its recorded SHA-256.")


def feed_pg_restore(
    dump: OpenDump, args: list[str], out: Path, env: dict[str, str] | None = None
) -> None:
    """Run ``pg_restore ARGS`` (its own binary prepended) on the dump, with stdout into ``out``.

    A custom-format dump is read from stdin; every chunk is read and checked even when
    pg_restore stops reading early (``--list`` only needs the table of contents). A
    directory-format dump is first unpacked (every chunk checked) into a private temporary
    directory, regular files only, removed afterwards."""
    if dump.directory_format:
        with private_dir("pgdr-dumpdir-") as tmp:
            _unpack(dump, tmp)
            _pg_restore(dump, [*args, str(tmp / "dump")], out, env, None)
        return
    _pg_restore(dump, args, out, env, plaintext(dump))


def _unpack(dump: OpenDump, into: Path) -> None:
    """The stored tar stream of a directory-format dump, into ``into``/dump."""
    stream = _Pieces(plaintext(dump))
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not (member.isfile() or member.isdir()) or not member.name.startswith("dump"):
                raise DamagedBackup(f"Dump {dump.id} holds an unexpected entry {member.name!r}.")
            tar.extract(member, into, filter="data")
    stream.drain()


class _Pieces(io.RawIOBase):
    """A read-only file over an iterator of byte pieces (for tarfile's stream mode)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._left = piece
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size

    def drain(self) -> None:
        """Read to the end, so every chunk (and the whole archive's SHA-256) is checked."""
        for _piece in self._pieces:
            pass


def _pg_restore(
    dump: OpenDump,
    args: list[str],
    out: Path,
    env: dict[str, str] | None,
    stdin: Iterator[bytes] | None,
) -> None:
    with out.open("wb") as stdout, tempfile.TemporaryFile() as stderr:
        proc = runner.start(
            [dump.pg_restore(), *args],
            env=env,
            stdout=stdout,
            stderr=stderr,
            stdin_pipe=stdin is not None,
        )
        try:
            if stdin is not None:
                _feed(proc.stdin, stdin)
            code = proc.wait()
        finally:
            runner.stop(proc, grace_s=0)
        stderr.seek(0)
        message = stderr.read().decode(errors="replace")
    if code != 0:
        raise RuntimeFailure(f"pg_restore failed on dump {dump.id}: {error_line(message)}")


def _feed(pipe: IO[bytes] | None, pieces: Iterator[bytes]) -> None:
    """Write every piece (all are read, so all are checked) while the reader accepts them."""
    assert pipe is not None
    accepting = True
    for piece in pieces:
        if accepting:
            try:
                pipe.write(piece)
            except BrokenPipeError:
                accepting = False
    with contextlib.suppress(BrokenPipeError):
        pipe.close()


@dataclass(frozen=True)
class TocEntry:
    """One line of ``pg_restore --list``: dump id, kind (TABLE, TABLE DATA, ...), schema, name."""

    line: str
    kind: str
    schema: str
    name: str


TOC_KINDS = (
    "TABLE DATA",
    "SEQUENCE SET",
    "SEQUENCE OWNED BY",
    "FK CONSTRAINT",
    "INDEX",
    "CONSTRAINT",
    "DEFAULT",
    "EXTENSION",
    "SCHEMA",
    "SEQUENCE",
    "TABLE",
    "TYPE",
    "DOMAIN",
    "FUNCTION",
    "COMMENT",
    "ACL",
)


def parse_toc(text: str) -> list[TocEntry]:
    """``pg_restore --list`` lines: ``id; oid oid KIND schema name owner``."""
    entries = []
    for line in text.splitlines():
        if not line or line.startswith(";"):
            continue
        rest = line.split(" ", 3)[-1] if line.count(" ") >= 3 else ""
        for kind in TOC_KINDS:
            if rest.startswith(kind + " "):
                parts = rest[len(kind) + 1 :].split(" ")
                schema, name = ([*parts, "", ""])[:2]
                entries.append(TocEntry(line, kind, schema, name))
                break
    return entries


def read_toc(dump: OpenDump, table: tuple[str, str] | None = None) -> list[TocEntry]:
    """The dump's table of contents (every chunk checked on the way); only the entries of
    ``table`` (schema, name) when given, as pg_restore itself selects them (``-n`` and ``-t``
    match names exactly: its list writes them unquoted, so "public a b" is table "a b" or a
    table "a" whose owner has a space in its name)."""
    only = [f"--schema={table[0]}", f"--table={table[1]}"] if table else []
    with private_dir("pgdr-toc-") as tmp:
        out = tmp / "toc"
        feed_pg_restore(dump, ["--list", *only], out)
        return parse_toc(out.read_text(errors="replace"))
