"""One batch's life in ``pgdr.reembed_batches``: claimed, its failures kept, marked done.

A worker claims the first pending batch with ``FOR UPDATE SKIP LOCKED`` and holds that row lock
until its transaction ends; every statement here runs in that transaction, so the failures, the
``done`` mark and its counters commit together with the batch's vectors, or not at all (the
batch is then simply claimed again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True)
class Claim:
    """A claimed batch: its number and its rows' keys with their groups (in the same order)."""

    batch_no: int
    keys: list[str]
    groups: list[str]

    @property
    def group_of(self) -> dict[str, str]:
        return dict(zip(self.keys, self.groups, strict=True))


@dataclass(frozen=True)
class BatchOutcome:
    """What one committed batch did to its rows (the counters of its ``done`` mark)."""

    written: int
    failed: int
    gone: int  # deleted since the batch was cut (e.g. their chatbot was deleted)
    cache_hits: int
    api_inputs: int


def claim_next(conn: psycopg.Connection[Any], job_id: int) -> Claim | None:
    """Lock the job's first pending batch no other worker holds; None when none is left."""
    row = conn.execute(
        "SELECT batch_no, keys, groups FROM pgdr.reembed_batches "
        "WHERE job_id = %s AND state = 'pending' ORDER BY batch_no "
        "LIMIT 1 FOR UPDATE SKIP LOCKED",
        (job_id,),
    ).fetchone()
    if row is None:
        return None
    return Claim(int(row[0]), list(row[1]), list(row[2]))


def record_failures(
    conn: psycopg.Connection[Any], job_id: int, claim: Claim, failures: dict[str, str]
) -> None:
    """Keep one reason per row that could not be embedded (the latest one wins)."""
    if not failures:
        return
    group_of = claim.group_of
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO pgdr.reembed_failures (job_id, row_key, group_key, reason) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (job_id, row_key) "
            "DO UPDATE SET reason = EXCLUDED.reason",
            [(job_id, k, group_of[k], reason) for k, reason in failures.items()],
        )


def mark_done(
    conn: psycopg.Connection[Any], job_id: int, batch_no: int, outcome: BatchOutcome, worker: str
) -> None:
    conn.execute(
        "UPDATE pgdr.reembed_batches SET state = 'done', written = %s, failed = %s, "
        "gone = %s, cache_hits = %s, api_inputs = %s, worker = %s, "
        "finished_at = clock_timestamp() WHERE job_id = %s AND batch_no = %s",
        (
            outcome.written,
            outcome.failed,
            outcome.gone,
            outcome.cache_hits,
            outcome.api_inputs,
            worker,
            job_id,
            batch_no,
        ),
    )


def pending_rows(conn: psycopg.Connection[Any], job_id: int) -> int:
    """Rows of the job's batches not yet done."""
    row = conn.execute(
        "SELECT coalesce(sum(cardinality(keys)), 0) FROM pgdr.reembed_batches "
        "WHERE job_id = %s AND state = 'pending'",
        (job_id,),
    ).fetchone()
    return int(row[0]) if row else 0


def wait_for_held(conn: psycopg.Connection[Any], job_id: int) -> bool:
    """Wait for the batches other workers hold; True if some are still pending after that.

    Blocks until their transactions end; batches they committed no longer match.
    """
    left = conn.execute(
        "SELECT batch_no FROM pgdr.reembed_batches WHERE job_id = %s "
        "AND state = 'pending' FOR UPDATE",
        (job_id,),
    ).fetchall()
    return bool(left)
