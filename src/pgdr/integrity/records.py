"""Where pgdr keeps its integrity records (snapshots, inventories): outside the protected database.

Today that is ``$PGDR_HOME/records/<kind>/<id>.json``; every read and write goes through
:class:`RecordStore`, so the backup repository can take over later without touching the checks.
Writes are atomic (temporary file, then rename) and never replace a file without ``force``.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgdr.errors import ConfigError

DIRECTORIES = {"snapshot": "snapshots", "inventory": "inventories"}


def new_record_id(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")


def write_json(path: Path, data: dict[str, Any], force: bool = False) -> Path:
    """Write ``data`` atomically; refuse to replace an existing file unless ``force``."""
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read {what} {path}: {exc}.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a pgdr {what}.")
    return data


class RecordStore:
    """Records of one kind ("snapshot", "inventory") under ``home/records/<kind>s``."""

    def __init__(self, home: Path, kind: str) -> None:
        self.kind = kind
        self.directory = home / "records" / DIRECTORIES.get(kind, kind + "s")

    def save(self, data: dict[str, Any], path: Path | None = None, force: bool = False) -> Path:
        target = path or self.directory / f"{data['id']}.json"
        return write_json(target, data, force)

    def ids(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json"))

    def load(self, ref: str | None = None) -> tuple[dict[str, Any], Path]:
        """A record by id or path; the newest one when ``ref`` is None."""
        what = self.kind
        if ref is None:
            ids = self.ids()
            if not ids:
                raise ConfigError(
                    f"No {what} has been saved under {self.directory} yet; take one first."
                )
            path = self.directory / f"{ids[-1]}.json"
        else:
            path = Path(ref)
            if not path.is_file():
                path = self.directory / f"{ref}.json"
            if not path.is_file():
                raise ConfigError(
                    f"{ref!r} is neither a {what} file nor the id of a saved {what} "
                    f"(saved: {', '.join(self.ids()[-5:]) or 'none'})."
                )
        data = read_json(path, what)
        if data.get("kind") != what:
            raise ConfigError(f"{path} is not a pgdr {what}.")
        return data, path
