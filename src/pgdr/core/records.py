"""pgdr's one record store: JSON records kept outside the protected database.

Records live under ``$PGDR_HOME/records/<kind>s/<id>.json`` (snapshots, inventories, incidents,
drill reports, …); a store opened for a named database keeps them under
``$PGDR_HOME/records/<database>/<kind>s/`` so one ``PGDR_HOME`` can serve several databases.

Invariants: every write is atomic (a temporary file in the same directory, then a rename), so a
reader never sees half a record; files are created 0600 because a record may hold query text,
table names or connection details; an existing record is never replaced without ``force``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pgdr.core.errors import ConfigError
from pgdr.core.time import stamp

DIRECTORIES = {"snapshot": "snapshots", "inventory": "inventories"}
FILE_MODE = 0o600


def new_record_id() -> str:
    """A sortable id for a new record: its UTC creation time to the microsecond."""
    return stamp()


def write_json(path: Path, data: dict[str, Any], force: bool = False) -> Path:
    """Write ``data`` atomically with mode 0600; refuse to replace a file unless ``force``."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", force)


def write_text(path: Path, text: str, force: bool = False) -> Path:
    """Write ``text`` atomically with mode 0600; refuse to replace a file unless ``force``."""
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A record's JSON object; a one-sentence ConfigError when unreadable or not an object."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read {what} {path}: {exc}.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a pgdr {what}.")
    return data


class RecordStore:
    """Records of one kind ("snapshot", "incident", …) under ``home/records[/database]/<kind>s``."""

    def __init__(self, home: Path, kind: str, database: str | None = None) -> None:
        self.kind = kind
        base = home / "records" if database is None else home / "records" / database
        self.directory = base / DIRECTORIES.get(kind, kind + "s")

    @classmethod
    def at(cls, directory: Path, kind: str) -> RecordStore:
        """A store of ``kind`` records kept in ``directory`` (a sandbox's, a test's)."""
        store = cls(directory, kind)
        store.directory = directory
        return store

    def path(self, record_id: str) -> Path:
        return self.directory / f"{record_id}.json"

    def save(self, data: dict[str, Any], path: Path | None = None, force: bool = False) -> Path:
        target = path or self.path(str(data["id"]))
        return write_json(target, data, force)

    def put(self, record_id: str, data: dict[str, Any]) -> Path:
        """Create or replace the record ``record_id`` (records that evolve, like incidents)."""
        return write_json(self.path(record_id), data, force=True)

    def ids(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json"))

    def all(self) -> list[dict[str, Any]]:
        """Every readable record, oldest id first; unreadable files are skipped."""
        records: list[dict[str, Any]] = []
        for record_id in self.ids():
            try:
                records.append(read_json(self.path(record_id), self.kind))
            except ConfigError:
                continue
        return records

    def load(self, ref: str | None = None) -> tuple[dict[str, Any], Path]:
        """A record by id or path; the newest one when ``ref`` is None."""
        path = self._newest() if ref is None else self._resolve(ref)
        data = read_json(path, self.kind)
        if data.get("kind") != self.kind:
            raise ConfigError(f"{path} is not a pgdr {self.kind}.")
        return data, path

    def _newest(self) -> Path:
        ids = self.ids()
        if not ids:
            raise ConfigError(
                f"No {self.kind} has been saved under {self.directory} yet; take one first."
            )
        return self.path(ids[-1])

    def _resolve(self, ref: str) -> Path:
        path = Path(ref)
        if not path.is_file():
            path = self.path(ref)
        if not path.is_file():
            raise ConfigError(
                f"{ref!r} is neither a {self.kind} file nor the id of a saved {self.kind} "
                f"(saved: {', '.join(self.ids()[-5:]) or 'none'})."
            )
        return path
