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

import psycopg
from psycopg import IsolationLevel

from pgdr.backup.repository import Repository
from pgdr.core.errors import CheckFailed, ConfigError
from pgdr.logical.throwaway import throwaway_copy
from pgdr.pool import connect
from pgdr.restore.rows import choose_rows, row_errors
from pgdr.restore.selection import write_selection
from pgdr.restore.target import Target, make_target
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
    find_s: float = 0.0  # finding the deleting transaction in the WAL
    restore_s: float = 0.0  # the throwaway copy's recovery
    rows_s: float = 0.0  # choosing the rows in the copy and putting them back
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


def _put_back(
    src: psycopg.Connection[Any],
    conninfo: str,
    result: UndeleteResult,
    key_column: str | None,
    apply: bool,
    confirm: Confirm | None,
) -> None:
    """Choose the rows in the copy (one snapshot), show them, and insert them if asked."""
    began = time.monotonic()
    selection = choose_rows(
        src, result.table, result.keys, key_column, True, missing="did not exist at that moment"
    )
    result.preview = selection.counts()
    if not result.preview[selection.table.qualified]:
        raise ConfigError(
            f"No row of {selection.table.qualified} with these keys is in the copy at "
            f"{result.target}, so nothing was inserted; check the keys, or give --at a time "
            "before they were deleted."
        )
    if apply or (confirm is not None and confirm(result.preview)):
        with row_errors(), connect(conninfo, autocommit=True) as dst:
            result.inserted = write_selection(src, dst, selection)
        result.applied = True
    result.rows_s = round(time.monotonic() - began, 3)


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
    result.keys, result.find_s = list(keys), round(time.monotonic() - began, 3)
    with connect(conninfo, autocommit=True, raw_errors=True) as conn:
        dbname = conn.info.dbname
    dry_run = not apply and confirm is None  # a read: PGDR_HOME is left as it was found
    with (
        throwaway_copy(repo, None, target, "undelete", read_only=dry_run) as (copy, restored),
        connect(copy.conninfo(dbname), autocommit=True) as src,
    ):
        assert restored is not None
        result.restore_s = restored.recovery_s
        src.isolation_level, src.read_only = IsolationLevel.REPEATABLE_READ, True
        with src.transaction():
            _put_back(src, conninfo, result, key_column, apply, confirm)
    result.duration_s = round(time.monotonic() - began, 3)
    return result
