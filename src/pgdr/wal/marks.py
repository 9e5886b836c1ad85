"""Named restore points (``pgdr mark NAME``): created on the server, recorded in the repository.

``pg_create_restore_point`` writes a WAL record that ``recovery_target_name`` stops at; pgdr
also records the name, LSN, time and timeline under ``wal/marks/`` (sealed), so a restore can
choose the base backup before it and check the window without reading WAL.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from pgdr.core.errors import ConfigError
from pgdr.crypto import open_sealed, seal
from pgdr.storage import ObjectNotFound
from pgdr.wal.archive import WalArchive
from pgdr.wal.server import connect, current_timeline

MARKS = "wal/marks/"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _key(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(
            f"{name!r} is not a usable restore point name (letters, digits, . _ -, "
            "up to 63 characters)."
        )
    return f"{MARKS}{name}.json"


def create_mark(
    conninfo: str, archive: WalArchive, name: str, force: bool = False
) -> dict[str, Any]:
    key = _key(name)
    if archive.store.exists(key) and not force:
        raise ConfigError(
            f"A restore point named {name!r} exists already; pass --force to add another."
        )
    with connect(conninfo) as conn:
        row = conn.execute(
            "SELECT pg_create_restore_point(%s)::text, clock_timestamp(),"
            " txid_current_if_assigned()",
            (name,),
        ).fetchone()
        assert row is not None
        tli = current_timeline(conn)
    record = {
        "name": name,
        "lsn": str(row[0]),
        "at": row[1].timestamp(),
        "time": row[1].isoformat(),
        "timeline": tli,
        "created_at": time.time(),
    }
    archive.store.put(key, seal(archive.key, key, json.dumps(record).encode()))
    return record


def find_mark(archive: WalArchive, name: str) -> dict[str, Any] | None:
    key = _key(name)
    try:
        raw = archive.store.get(key)
    except ObjectNotFound:
        return None
    record: dict[str, Any] = json.loads(open_sealed(archive.key, key, raw))
    return record


def list_marks(archive: WalArchive) -> list[dict[str, Any]]:
    marks = []
    for info in archive.store.list(MARKS):
        name = info.key[len(MARKS) :].removesuffix(".json")
        mark = find_mark(archive, name)
        if mark:
            marks.append(mark)
    return sorted(marks, key=lambda m: float(m["at"]))
