"""``pgdr check``: run the planned table passes and turn their counts into findings.

One connection, read-only, with a statement timeout per query: a table whose pass hits the
timeout is reported as partial and the run goes on. Sample keys are fetched only for conditions
that found something, so a healthy database costs exactly one query per table.

With ``deep``, ``pg_amcheck`` runs **before** any query that reads table contents: a damaged heap
page on a cluster without data checksums can crash the backend that reads it, so tables found
damaged (their heap, TOAST or an index) are never read by pgdr; they are P0 findings and listed
as not checked. Without ``deep`` nothing but the catalog and the planned passes is read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, sql

from pgdr.core.connect import redact
from pgdr.core.errors import RuntimeFailure
from pgdr.integrity.catalog import Catalog, read_catalog
from pgdr.integrity.discover import resolve
from pgdr.integrity.findings import Finding, Report, iso
from pgdr.integrity.plan import Condition, TablePass, build_plan
from pgdr.integrity.storage import check_amcheck, check_checksums, damaged_tables
from pgdr.pool import connect
from pgdr.profile import Profile

SCHEMA_ERRORS = ("42",)  # syntax errors, undefined objects, insufficient privilege


@dataclass(frozen=True)
class CheckOptions:
    vectors: bool = False  # read every vector (NaN, infinity, zero vectors)
    deep: bool = False  # pg_amcheck on heap and B-tree indexes
    timeout_s: float = 300.0
    samples: int = 5
    groups: int = 50


Progress = Callable[[str], None]


@contextmanager
def database_errors(what: str) -> Iterator[None]:
    """Turn a failure no check anticipated (a lost connection, a catalog query timing out)
    into one sentence instead of a traceback."""
    try:
        yield
    except psycopg.Error as exc:
        raise RuntimeFailure(f"{what} failed: {_first_line(exc)}") from exc


def open_checked(conninfo: str, timeout_s: float) -> psycopg.Connection[Any]:
    """A read-only autocommit connection whose statements give up after ``timeout_s``."""
    conn = connect(conninfo, autocommit=True)
    conn.execute("SET default_transaction_read_only = on")
    conn.execute(
        sql.SQL("SET statement_timeout = {}").format(sql.Literal(f"{int(timeout_s * 1000)}ms"))
    )
    # below the statement timeout, so that a lock held by a migration is reported as a lock
    lock_ms = int(min(timeout_s / 2, 10) * 1000)
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{lock_ms}ms")))
    return conn


def run_check(
    conninfo: str,
    profile: Profile | None,
    options: CheckOptions | None = None,
    progress: Progress | None = None,
) -> Report:
    """Every check of ``pgdr check`` against one database; without a profile, the ConvoAI one
    when its tables exist, otherwise one discovered from the catalog (discover.py)."""
    options = options or CheckOptions()
    started = time.perf_counter()
    report = Report("check", redact(conninfo), profile.name if profile else None)
    with database_errors("The integrity check"), open_checked(conninfo, options.timeout_s) as conn:
        catalog = read_catalog(conn)
        if profile is None:
            found = resolve(conn, catalog)
            profile, report.profile = found.profile, found.profile.name
            report.notes.extend(found.notes)
        if not catalog.has_pgvector:
            report.notes.append(
                "pgvector is not installed in this database; vector columns are checked as "
                "real[] / double precision[] arrays."
            )
        if not options.vectors:
            report.notes.append(
                "Vector contents (NaN, infinity, zero vectors) were not read; pass --vectors "
                "(or --deep) to read every vector."
            )
        plan = build_plan(profile, catalog, report, vectors=options.vectors)
        damaged = _deep_first(conn, catalog, report, options, conninfo)
        # Every pass reads its whole table: sequential scans and hash joins are the right plan,
        # while the planner, seeing GROUP BY or correlated rule subqueries, may pick index scans
        # over millions of rows. Index-only scans stay allowed for the rules' subqueries.
        conn.execute("SET enable_indexscan = off")
        conn.execute("SET enable_bitmapscan = off")
        tables: list[dict[str, Any]] = []
        sources: list[dict[str, Any]] = []
        for tp in plan.passes:
            if progress:
                progress(tp.table.qualified)
            if not _avoid_damaged(tp, damaged, report):
                continue
            result = _run_pass(conn, tp, report, options)
            if result is None:
                continue
            tables.append(result["table"])
            sources.extend(result["embeddings"])
        # after pg_amcheck, so that pages it found failing their checksums are counted too
        check_checksums(conn, report)
    report.sections = {"tables": tables, "embeddings": sources}
    report.duration_s = time.perf_counter() - started
    return report


def _deep_first(
    conn: psycopg.Connection[Any],
    catalog: Catalog,
    report: Report,
    options: CheckOptions,
    conninfo: str,
) -> set[str]:
    """With ``deep``: pg_amcheck before anything reads a table; the tables found damaged."""
    if not options.deep:
        return set()
    if "amcheck" not in catalog.extensions:
        report.notes.append(
            "--deep installed the amcheck extension in this database (pg_amcheck "
            "--install-missing); DROP EXTENSION amcheck removes it."
        )
    problems = check_amcheck(conninfo, catalog.server_version // 10000, report, options.timeout_s)
    return damaged_tables(conn, problems, report)


def _avoid_damaged(tp: TablePass, damaged: set[str], report: Report) -> bool:
    """Never read a damaged table: skip its pass, or the conditions that join a damaged parent."""
    if tp.table.qualified in damaged:
        report.skip(
            "table pass",
            f"{tp.table.qualified} was not read because pg_amcheck found it damaged "
            "(reading a damaged page can crash the server); restore it from a backup.",
            tp.table.qualified,
            True,
        )
        return False
    keep: list[Condition] = []
    for cond in tp.conditions:
        parent = cond.details.get("parent")
        if parent in damaged:
            report.skip(
                cond.check,
                f"{cond.name} on {tp.table.qualified} was not checked: its parent {parent} "
                "is damaged and was not read.",
                tp.table.qualified,
                True,
            )
        else:
            keep.append(cond)
    tp.conditions = keep
    return True


def _timeout_sentence(tp: TablePass, options: CheckOptions) -> str:
    return (
        f"the pass over {tp.table.qualified} stopped after {options.timeout_s:g} s "
        "(statement timeout); its results are missing from this report (raise --timeout)."
    )


def _execute(
    conn: psycopg.Connection[Any], tp: TablePass, report: Report, options: CheckOptions
) -> list[tuple[Any, ...]] | None:
    """Run the pass; drop conditions the server rejects (with the reason) and retry once."""
    for attempt in range(2):
        try:
            return conn.execute(tp.select()).fetchall()
        except errors.QueryCanceled:
            report.skip("table pass", _timeout_sentence(tp, options), tp.table.qualified, True)
            return None
        except errors.LockNotAvailable:
            report.skip(
                "table pass",
                f"{tp.table.qualified} is locked by another session (lock timeout); "
                "it was not checked.",
                tp.table.qualified,
                True,
            )
            return None
        except psycopg.Error as exc:
            state = exc.sqlstate or ""
            if attempt or not state.startswith(SCHEMA_ERRORS):
                report.skip(
                    "table pass",
                    f"the pass over {tp.table.qualified} failed: {_first_line(exc)}",
                    tp.table.qualified,
                    True,
                )
                return None
            _drop_bad_conditions(conn, tp, report)
    return None


def _drop_bad_conditions(conn: psycopg.Connection[Any], tp: TablePass, report: Report) -> None:
    keep: list[Condition] = []
    for cond in tp.conditions:
        probe = sql.SQL("EXPLAIN SELECT count(*) FILTER (WHERE {}) FROM {}").format(
            cond.predicate, tp.source()
        )
        try:
            conn.execute(probe)
        except psycopg.Error as exc:
            reason = (
                f"role {conn.info.user} lacks a privilege it needs"
                if isinstance(exc, errors.InsufficientPrivilege)
                else "the server rejected it"
            )
            report.skip(
                cond.check,
                f"{cond.check} check {cond.name} on {tp.table.qualified} could not run: {reason}"
                f" ({_first_line(exc)})",
                tp.table.qualified,
                True,
            )
            continue
        keep.append(cond)
    tp.conditions = keep


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__).rstrip(".") + "."


def _run_pass(
    conn: psycopg.Connection[Any], tp: TablePass, report: Report, options: CheckOptions
) -> dict[str, Any] | None:
    rows = _execute(conn, tp, report, options)
    if rows is None:
        return None
    row = rows[0]
    total, newest = int(row[0]), row[1]
    n_metrics = len(tp.metrics)
    metric_totals = [int(v) for v in row[2 : 2 + n_metrics]]
    cond_totals = [int(v) for v in row[2 + n_metrics :]]
    table = {
        "table": tp.table.qualified,
        "rows": total,
        "newest": iso(newest),
    }
    for cond, found in zip(tp.conditions, cond_totals, strict=True):
        if not found:
            continue
        report.add(
            Finding(
                cond.check,
                cond.code,
                cond.severity,
                f"{found:,} of {total:,} rows of {tp.table.qualified} {cond.describe}.",
                table=tp.table.qualified,
                name=cond.name,
                count=found,
                rows=total,
                samples=_samples(conn, tp, cond, report, options),
                details=cond.details,
            )
        )
    embeddings = [
        _source_summary(conn, tp, name, total, metric_totals, cond_totals, report, options)
        for name in tp.sources
    ]
    return {"table": table, "embeddings": embeddings}


def _samples(
    conn: psycopg.Connection[Any],
    tp: TablePass,
    cond: Condition,
    report: Report,
    options: CheckOptions,
) -> list[str]:
    if options.samples <= 0:
        return []
    try:
        return [str(r[0]) for r in conn.execute(tp.samples(cond, options.samples))]
    except errors.QueryCanceled:
        report.skip(
            "samples",
            f"sample keys for {cond.name} on {tp.table.qualified} timed out.",
            tp.table.qualified,
            incomplete=False,
        )
    except psycopg.Error as exc:
        report.skip("samples", f"sample keys for {cond.name}: {_first_line(exc)}", incomplete=False)
    return []


def _source_summary(
    conn: psycopg.Connection[Any],
    tp: TablePass,
    source: str,
    total: int,
    metric_totals: list[int],
    cond_totals: list[int],
    report: Report,
    options: CheckOptions,
) -> dict[str, Any]:
    """Totals of one embedding source and the groups (chatbots) that have problems."""
    metric_index = {m.name: i for i, m in enumerate(tp.metrics)}
    cond_index = {
        c.code: i
        for i, c in enumerate(tp.conditions)
        if c.check == "embeddings" and c.name == source
    }
    summary: dict[str, Any] = {
        "source": source,
        "table": tp.table.qualified,
        "rows": total,
        "with_vector": metric_totals[metric_index[f"{source}:with_vector"]],
        "contents_read": options.vectors,
        "group_by": tp.group_by,
    }
    for code, i in cond_index.items():
        summary[code] = cond_totals[i]
    if tp.group_by is None:
        return summary
    bad = [i for i in cond_index.values() if cond_totals[i]]
    summary["groups"] = []
    if not bad:
        return summary
    try:
        rows = conn.execute(tp.problem_groups(bad, options.groups)).fetchall()
    except psycopg.Error as exc:
        report.skip(
            "embeddings",
            f"per-{tp.group_by} summary of {source}: {_first_line(exc)}",
            incomplete=False,
        )
        return summary
    n_metrics = len(tp.metrics)
    codes = [c for c, i in cond_index.items() if i in bad]
    for row in rows:
        group = {"group": row[0], "rows": int(row[1])}
        group["with_vector"] = int(row[2 + metric_index[f"{source}:with_vector"]])
        for code, value in zip(codes, row[2 + n_metrics :], strict=True):
            group[code] = int(value)
        summary["groups"].append(group)
    return summary
