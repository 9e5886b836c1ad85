"""Snapshots (row counts, newest ``created_at``, key fingerprints) and their comparison.

The runbook's "verify restoration" queries, automated. A fingerprint is the XOR of a 64-bit hash
of every row's primary key: cheap (one pass over the table, keys only) and order-free. On
comparison each table is read once more, counting and fingerprinting separately the rows that
already existed at the snapshot (``created_at`` up to the snapshot's newest), so rows that were
deleted are found even when new inserts hide the drop in the total.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors, sql

from pgdr.core.connect import redact
from pgdr.core.names import qualified_name
from pgdr.core.records import new_record_id
from pgdr.integrity.catalog import read_catalog
from pgdr.integrity.findings import Finding, Report, iso
from pgdr.integrity.run import database_errors, open_checked
from pgdr.profile import Profile

SNAPSHOT_VERSION = 1


def _fingerprint(alias: sql.Identifier, key: list[str]) -> sql.Composable:
    if not key:
        return sql.SQL("NULL::bigint")
    text = sql.SQL("ROW({})::text").format(
        sql.SQL(", ").join(sql.SQL("{}.{}").format(alias, sql.Identifier(c)) for c in key)
    )
    return sql.SQL("hashtextextended({}, 0)").format(text)


def _table_sql(
    schema: str, name: str, key: list[str], created_at: str | None, since: str | None
) -> sql.Composed:
    alias = sql.Identifier("t")
    fp = _fingerprint(alias, key)
    created = sql.SQL("t.{}").format(sql.Identifier(created_at)) if created_at else None
    items: list[sql.Composable] = [
        sql.SQL("count(*)"),
        sql.SQL("max({})").format(created) if created else sql.SQL("NULL::timestamptz"),
        sql.SQL("bit_xor({})::text").format(fp),
    ]
    if since is not None and created is not None:
        old = sql.SQL("{} <= {}::timestamptz").format(created, sql.Literal(since))
        items += [
            sql.SQL("count(*) FILTER (WHERE {})").format(old),
            sql.SQL("bit_xor({}) FILTER (WHERE {})::text").format(fp, old),
        ]
    return sql.SQL("SELECT {} FROM {}.{} AS t").format(
        sql.SQL(", ").join(items), sql.Identifier(schema), sql.Identifier(name)
    )


def take_snapshot(
    conninfo: str, profile: Profile, timeout_s: float = 300.0, report: Report | None = None
) -> dict[str, Any]:
    """Counts, newest row and fingerprint of every table of the profile; one query each."""
    report = report or Report("snapshot", redact(conninfo), profile.name)
    tables: dict[str, Any] = {}
    with database_errors("The snapshot"), open_checked(conninfo, timeout_s) as conn:
        catalog = read_catalog(conn)
        for spec in profile.tables:
            qualified = qualified_name(spec.name, spec.schema_name)
            info = catalog.tables.get(qualified)
            if info is None:
                tables[qualified] = {"missing": True}
                continue
            created = spec.created_at if spec.created_at in info.columns else None
            row = run_one(
                conn,
                _table_sql(info.schema, info.name, info.primary_key, created, None),
                report,
                qualified,
                timeout_s,
            )
            if row is None:
                continue
            tables[qualified] = {
                "rows": int(row[0]),
                "newest": iso(row[1]),
                "fingerprint": row[2],
                "key": info.primary_key,
                "created_at": created,
            }
    return {
        "version": SNAPSHOT_VERSION,
        "kind": "snapshot",
        "id": new_record_id(),
        "taken_at": datetime.now(UTC).isoformat(),
        "database": redact(conninfo),
        "profile": profile.name,
        "tables": tables,
    }


def run_one(
    conn: psycopg.Connection[Any],
    query: sql.Composed,
    report: Report,
    table: str,
    timeout_s: float,
    many: bool = False,
) -> Any:
    """One row (or all rows) of ``query``; None, with the reason recorded, when it cannot run."""
    try:
        cur = conn.execute(query)
        return cur.fetchall() if many else cur.fetchone()
    except errors.QueryCanceled:
        report.skip(
            report.kind,
            f"reading {table} stopped after {timeout_s:g} s (statement timeout); "
            "it is missing from this result (raise --timeout).",
            table,
            partial=True,
        )
    except errors.InsufficientPrivilege:
        report.skip(report.kind, f"role {conn.info.user} may not read {table} (needs SELECT).")
    return None


def compare_snapshot(
    conninfo: str, baseline: dict[str, Any], profile: Profile, timeout_s: float = 300.0
) -> Report:
    """What changed since ``baseline``: fewer rows, older newest row, changed history."""
    started = time.perf_counter()
    report = Report("compare", redact(conninfo), profile.name)
    rows_out: list[dict[str, Any]] = []
    with database_errors("The comparison"), open_checked(conninfo, timeout_s) as conn:
        catalog = read_catalog(conn)
        for qualified, before in sorted(baseline.get("tables", {}).items()):
            if before.get("missing"):
                continue
            info = catalog.tables.get(qualified)
            if info is None:
                report.add(
                    Finding(
                        "compare",
                        "table_missing",
                        "critical",
                        f"Table {qualified} existed at the snapshot with {before['rows']:,} rows "
                        "and is gone.",
                        table=qualified,
                        count=before["rows"],
                        rows=before["rows"],
                    )
                )
                continue
            created = before.get("created_at")
            created = created if created in info.columns else None
            since = before.get("newest") if created else None
            key = before.get("key") or []
            if any(c not in info.columns for c in key):
                key = []
            query = _table_sql(info.schema, info.name, key, created, since)
            row = run_one(conn, query, report, qualified, timeout_s)
            if row is None:
                continue
            now = {
                "rows": int(row[0]),
                "newest": iso(row[1]),
                "fingerprint": row[2],
            }
            if len(row) > 3:
                now["rows_at_snapshot"] = int(row[3])
                now["fingerprint_at_snapshot"] = row[4]
            _judge(report, qualified, before, now, bool(key))
            rows_out.append({"table": qualified, "before": before, "now": now})
    report.sections = {
        "baseline": {k: baseline.get(k) for k in ("id", "taken_at", "database", "profile")},
        "tables": rows_out,
    }
    report.duration_s = time.perf_counter() - started
    return report


def _judge(
    report: Report, table: str, before: dict[str, Any], now: dict[str, Any], keyed: bool
) -> None:
    """Compare one table with its snapshot: rows, newest row, then (keyed tables) the keys."""
    for finding in (
        _judge_rows(table, before, now),
        _judge_newest(table, before, now),
        _judge_keys(table, before, now) if keyed else None,
    ):
        if finding is not None:
            report.add(finding)


def _judge_rows(table: str, before: dict[str, Any], now: dict[str, Any]) -> Finding | None:
    """Fewer rows than at the snapshot, or rows of then gone and hidden by newer ones."""
    old_rows = int(before["rows"])
    if now["rows"] < old_rows:
        lost = old_rows - now["rows"]
        return Finding(
            "compare",
            "rows_fell",
            "critical",
            f"{table} has {now['rows']:,} rows, {lost:,} fewer than the {old_rows:,} at the "
            "snapshot (mass deletion or an older restore?).",
            table=table,
            count=lost,
            rows=old_rows,
        )
    if "rows_at_snapshot" in now and now["rows_at_snapshot"] < old_rows:
        lost = old_rows - now["rows_at_snapshot"]
        return Finding(
            "compare",
            "rows_lost",
            "critical",
            f"{lost:,} of the {old_rows:,} rows {table} had at the snapshot are gone, "
            "hidden in the total by newer rows.",
            table=table,
            count=lost,
            rows=old_rows,
        )
    return None


def _judge_newest(table: str, before: dict[str, Any], now: dict[str, Any]) -> Finding | None:
    if before.get("newest") and (now["newest"] is None or now["newest"] < before["newest"]):
        return Finding(
            "compare",
            "newest_went_back",
            "critical",
            f"The newest row of {table} is from {now['newest']}, older than "
            f"{before['newest']} at the snapshot: recent data is missing.",
            table=table,
            details={"before": before["newest"], "now": now["newest"]},
        )
    return None


def _judge_keys(table: str, before: dict[str, Any], now: dict[str, Any]) -> Finding | None:
    """As many rows from before the snapshot as then, but another key fingerprint."""
    if before.get("fingerprint") is None:
        return None
    old_rows = int(before["rows"])
    if "rows_at_snapshot" in now:
        same_rows = now["rows_at_snapshot"] == old_rows
        changed = now["fingerprint_at_snapshot"] != before["fingerprint"]
    else:
        same_rows = now["rows"] == old_rows
        changed = now["fingerprint"] != before["fingerprint"]
    if not (same_rows and changed):
        return None
    return Finding(
        "compare",
        "fingerprint_changed",
        "warning",
        f"{table} has as many rows from before the snapshot as then, but different "
        "keys: rows were replaced (deleted and re-inserted, or restored from elsewhere).",
        table=table,
    )
