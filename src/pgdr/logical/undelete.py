"""``pgdr undelete``: the runbook's Scenario 3 in one command.

1. **Find the moment** (``--at auto``): ``wal find`` names the committed transaction that
   deleted from (or truncated) the table; the recovery target is its first record, inclusive,
   so the throwaway copy stops inside that transaction before its commit: the rows are still
   there and everything committed before is. ``--at TIME`` restores to a time instead.
2. **Restore a throwaway cluster** to that point (``$PGDR_HOME/scratch/undelete-*``), read-only.
3. **Show, then put back** the rows with these keys and every row that references them
   (``recover rows --with-children``: parents first, one transaction, ``ON CONFLICT DO NOTHING``
   so rows that still exist are left alone). Nothing is inserted unless ``apply`` is set or
   ``confirm`` says yes after seeing the preview.
4. **Remove the throwaway cluster**, whatever happened (:mod:`pgdr.logical.throwaway`; the
   copy's new timeline is not published to the repository).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pgdr.backup.repository import Repository
from pgdr.core.errors import CheckFailed, ConfigError
from pgdr.integrity.catalog import read_catalog
from pgdr.logical.throwaway import throwaway_copy
from pgdr.pool import connect
from pgdr.restore.pitr import Target, make_target
from pgdr.restore.rows import collect_rows, dependency_order, recover_rows
from pgdr.wal.archive import WalArchive
from pgdr.wal.find import find_changes

Confirm = Callable[[dict[str, int]], bool]


@dataclass
class UndeleteResult:
    table: str
    keys: list[str]
    target: str
    xid: int | None = None
    commit_time: str | None = None
    preview: dict[str, int] = field(default_factory=dict)  # rows found in the copy per table
    inserted: dict[str, int] = field(default_factory=dict)
    applied: bool = False
    restore_s: float = 0.0
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _target(
    archive: WalArchive, repo: Repository, conninfo: str, table: str, at: str
) -> tuple[Target, UndeleteResult]:
    if at != "auto":
        target = make_target(at, None, None, None, False)
        assert target is not None
        return target, UndeleteResult(table, [], target.describe())
    found = find_changes(archive, repo.list_backups(), conninfo, table, op="delete")
    tx = found.suspect_transaction()
    if tx is None:
        raise CheckFailed(
            f"No committed deletion from {table} is in the repository's WAL; give --at TIME "
            "(a moment before the rows were deleted)."
        )
    result = UndeleteResult(found.table, [], f"lsn {tx.first_lsn}", tx.xid, tx.commit_time)
    result.notes.append(
        f"Transaction {tx.xid} (committed {tx.commit_time}) deleted {tx.rows['delete']:,} "
        f"row(s){' and truncated the table' if tx.truncate else ''}; the copy stops inside it, "
        "before its commit."
    )
    if tx.audit:
        result.notes.append(
            f"The pgdr_audit trail says role {tx.audit['role']} ran it ({tx.audit['rows']:,} "
            f"row(s) recorded from {tx.audit['at']})."
        )
    return Target("lsn", tx.first_lsn), result


def _preview(source: str, table: str, keys: list[str], key_column: str | None) -> dict[str, int]:
    with connect(source, autocommit=True) as conn:
        catalog = read_catalog(conn)
        info = catalog.find(table, "public")
        if info is None:
            raise ConfigError(f"Table {table} did not exist at the chosen moment.")
        column = key_column or (info.primary_key[0] if len(info.primary_key) == 1 else "")
        if column not in info.columns:
            raise ConfigError(f"{info.qualified} has no single-column key; give --key-column.")
        rows, found = collect_rows(conn, catalog, info, column, keys, True)
        return {t: len(rows[t]) for t in dependency_order(catalog, found)}


def undelete(
    repo: Repository,
    conninfo: str,
    table: str,
    keys: list[str],
    *,
    at: str = "auto",
    key_column: str | None = None,
    apply: bool = False,
    confirm: Confirm | None = None,
) -> UndeleteResult:
    """Put back the rows of ``table`` with ``keys`` (and their children) from a throwaway
    copy restored to just before their deletion."""
    began = time.monotonic()
    if not keys:
        raise ConfigError("Give at least one --key.")
    archive = WalArchive.open(repo.store, repo.master_key)
    target, result = _target(archive, repo, conninfo, table, at)
    result.keys = list(keys)
    with connect(conninfo, autocommit=True, raw_errors=True) as conn:
        dbname = conn.info.dbname
    with throwaway_copy(repo, None, target, "undelete") as (copy, restored):
        assert restored is not None
        result.restore_s = restored.recovery_s
        source = copy.conninfo(dbname)
        result.preview = _preview(source, table, keys, key_column)
        if not result.preview:
            raise CheckFailed(f"No row of {table} with these keys is in the copy.")
        if apply or (confirm is not None and confirm(result.preview)):
            done = recover_rows(
                source, conninfo, table, keys, key_column=key_column, with_children=True
            )
            result.inserted = {t.table: t.inserted for t in done.tables}
            result.applied = True
    result.duration_s = round(time.monotonic() - began, 3)
    return result
