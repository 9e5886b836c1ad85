"""A re-embedding job's groups (chatbots): rows left per group and the runbook's status moves.

The runbook moves a chatbot's status ``ready -> embedding`` when its work starts
(:func:`mark_working`, on the worker's autocommit status connection, so ``reembed status`` and
the application see it at once) and ``embedding -> ready``, or ``failed`` with a reason that
starts with :data:`REEMBED_FAILURE`, when the batch that finishes its last rows commits
(:func:`count_groups`, in that batch's transaction: the counters, the status and the batch's
``done`` mark commit together).

Invariants: a status only moves from the state the runbook expects, so a chatbot failed for
another reason (the crawl, HTTP 503) keeps its status; group rows are locked in key order, so
workers sharing a group never deadlock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgdr.embeddings.source import ResolvedSource

REEMBED_FAILURE = "re-embedding failed"  # how a failure reason set by pgdr starts


@dataclass(frozen=True)
class FinishedGroup:
    """A group whose last rows a batch just counted off."""

    key: str
    failed: int
    total: int
    reason: str | None


def mark_working(
    status_conn: psycopg.Connection[Any],
    src: ResolvedSource,
    groups: list[str],
    retry_failed: bool,
) -> None:
    """Runbook step: the chatbot's status goes ``ready -> embedding`` as its work starts.

    With ``retry_failed`` (a chatbot named with ``--chatbot``) it may also come from ``failed``,
    but only when pgdr's own re-embedding failed it (its reason says so): a chatbot failed for
    another reason gets its vectors but keeps its status, so it never turns ``ready``.
    """
    st = src.spec.status
    if st is None or not src.spec.group_by or src.status_key_type is None:
        return
    retry: sql.Composable = sql.SQL("false")
    if retry_failed and st.reason_column:
        retry = sql.SQL("({col} = {failed} AND starts_with({reason}, {ours}))").format(
            col=sql.Identifier(st.column),
            failed=sql.Literal(st.failed),
            reason=sql.Identifier(st.reason_column),
            ours=sql.Literal(REEMBED_FAILURE),
        )
    status_conn.execute(
        sql.SQL(
            "UPDATE {table} SET {col} = %s WHERE {key} = ANY(%s::text[]::{kt}[]) "
            "AND ({col} = %s OR {retry})"
        ).format(
            table=sql.Identifier(src.schema, st.table),
            col=sql.Identifier(st.column),
            key=sql.Identifier(st.key),
            kt=sql.SQL(src.status_key_type),
            retry=retry,
        ),
        (st.working, groups, st.ready),
    )


def count_groups(
    conn: psycopg.Connection[Any],
    src: ResolvedSource,
    job_id: int,
    group_of: dict[str, str],
    failures: dict[str, str],
) -> None:
    """Count a batch's rows (``group_of``: key -> group) off their groups; a group this batch
    finished moves to ready, or to failed when some of its rows failed."""
    finished = _count_off(conn, job_id, group_of, failures)
    _mark_ready(conn, src, [g.key for g in finished if g.key and not g.failed])
    for group in finished:
        if group.key and group.failed:
            _mark_failed(conn, src, group)


def _count_off(
    conn: psycopg.Connection[Any],
    job_id: int,
    group_of: dict[str, str],
    failures: dict[str, str],
) -> list[FinishedGroup]:
    """Subtract the batch's rows from ``pgdr.reembed_groups``; the groups left with none."""
    done = Counter(group_of.values())
    failed = Counter(group_of[k] for k in failures)
    first_reason: dict[str, str] = {}
    for key, reason in failures.items():
        first_reason.setdefault(group_of[key], reason)
    names = sorted(done)
    conn.execute(  # lock in a fixed order: workers sharing a group never deadlock
        "SELECT 1 FROM pgdr.reembed_groups WHERE job_id = %s AND group_key = ANY(%s) "
        "ORDER BY group_key FOR UPDATE",
        (job_id, names),
    )
    # One pass over the touched groups; those this batch finished come back with remaining <= 0.
    # No join: with ``group_key = ANY(...)`` it is one index probe per group whatever the
    # statistics say. (Joined with ``unnest``, a new job's groups, not yet analysed, were
    # estimated at one row: the plan walked all of the job's groups and rescanned the batch's
    # list for each, 0.6 s a batch at 7,500 groups, most of a warm 100,000-row run.)
    updated = conn.execute(
        "UPDATE pgdr.reembed_groups g SET "
        "remaining = g.remaining - (%(n)s::int[])[array_position(%(k)s::text[], g.group_key)], "
        "failed = g.failed + (%(f)s::int[])[array_position(%(k)s::text[], g.group_key)], "
        "reason = coalesce(g.reason, (%(r)s::text[])[array_position(%(k)s::text[], g.group_key)]) "
        "WHERE g.job_id = %(job)s AND g.group_key = ANY(%(k)s::text[]) "
        "RETURNING g.group_key, g.failed, g.total, g.reason, g.remaining",
        {
            "k": names,
            "n": [done[g] for g in names],
            "f": [failed[g] for g in names],
            "r": [first_reason.get(g) for g in names],
            "job": job_id,
        },
    ).fetchall()
    return [FinishedGroup(r[0], r[1], r[2], r[3]) for r in updated if r[4] <= 0]


def _mark_ready(conn: psycopg.Connection[Any], src: ResolvedSource, ready: list[str]) -> None:
    """One statement for every group finished cleanly in the batch: ``embedding -> ready``."""
    st = src.spec.status
    if not ready or st is None or src.status_key_type is None:
        return
    col = sql.Identifier(st.column)
    reset = (
        sql.SQL(", {} = NULL").format(sql.Identifier(st.reason_column))
        if st.reason_column  # a retried chatbot's old failure reason no longer holds
        else sql.SQL("")
    )
    conn.execute(
        sql.SQL("UPDATE {} SET {} = %s{} WHERE {} = ANY(%s::text[]::{}[]) AND {} = %s").format(
            sql.Identifier(src.schema, st.table),
            col,
            reset,
            sql.Identifier(st.key),
            sql.SQL(src.status_key_type),
            col,
        ),
        (st.ready, ready, st.working),
    )


def _mark_failed(conn: psycopg.Connection[Any], src: ResolvedSource, group: FinishedGroup) -> None:
    """``embedding -> failed``, with pgdr's reason when the profile has a reason column."""
    st = src.spec.status
    if st is None or src.status_key_type is None:
        return
    col = sql.Identifier(st.column)
    sets: list[sql.Composable] = [sql.SQL("{} = %s").format(col)]
    params: list[Any] = [st.failed]
    if st.reason_column:
        sets.append(sql.SQL("{} = %s").format(sql.Identifier(st.reason_column)))
        params.append(f"{REEMBED_FAILURE} for {group.failed} of {group.total} rows: {group.reason}")
    conn.execute(
        sql.SQL("UPDATE {} SET {} WHERE {} = %s::{} AND {} = %s").format(
            sql.Identifier(src.schema, st.table),
            sql.SQL(", ").join(sets),
            sql.Identifier(st.key),
            sql.SQL(src.status_key_type),
            col,
        ),
        [*params, group.key, st.working],
    )
