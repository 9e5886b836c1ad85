"""Storage-level checks: the server's data checksum failure counters and ``pg_amcheck``.

Checksum counters cost nothing and always run. ``pg_amcheck`` (``--deep``) reads every heap and
B-tree index page, so it is opt-in; it runs with the client binaries matching the server's major
version, and installs the ``amcheck`` contrib extension if the database lacks it.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from pgdr.cluster import installation_for_major
from pgdr.core import runner
from pgdr.core.connect import client_environment
from pgdr.core.errors import PgdrError
from pgdr.integrity.findings import Finding, Report

_HEADER = re.compile(r'^(heap table|btree index|toast table)\s+"([^"]+)"(.*?):?\s*$')


def check_checksums(conn: psycopg.Connection[Any], report: Report) -> None:
    """A critical finding when the server counted checksum failures in this database."""
    row = conn.execute("SELECT current_setting('data_checksums')").fetchone()
    enabled = bool(row and row[0] == "on")
    if not enabled:
        report.notes.append(
            "Data checksums are disabled on this cluster; torn or flipped pages are only found "
            "by --deep (pg_amcheck)."
        )
        return
    found = conn.execute(
        "SELECT coalesce(checksum_failures, 0), checksum_last_failure FROM pg_stat_database "
        "WHERE datname = current_database()"
    ).fetchone()
    if found and int(found[0]) > 0:
        report.add(
            Finding(
                "storage",
                "checksum_failures",
                "critical",
                f"The server has counted {int(found[0])} data checksum failure(s) in this "
                f"database, the last at {found[1]}: pages on disk are damaged.",
                count=int(found[0]),
                details={"last_failure": str(found[1])},
            )
        )


def parse_amcheck(output: str) -> dict[str, list[str]]:
    """pg_amcheck's report as ``{relation: [problem, ...]}``."""
    problems: dict[str, list[str]] = {}
    current: str | None = None
    for line in output.splitlines():
        if not line.strip():
            continue
        match = _HEADER.match(line)
        if match:
            kind, relation, where = match.groups()
            current = f"{kind} {relation}"
            problems.setdefault(current, [])
            if where.strip(" ,:"):
                problems[current].append(where.strip(" ,:"))
            continue
        if current is not None:
            problems[current].append(line.strip())
        else:
            problems.setdefault("pg_amcheck", []).append(line.strip())
    return problems


def check_amcheck(conninfo: str, major: int, report: Report, timeout_s: float) -> None:
    """Run pg_amcheck over the whole database; each damaged relation is a critical finding."""
    try:
        tool = installation_for_major(major).tool("pg_amcheck")
    except PgdrError as exc:
        report.skip("storage", f"pg_amcheck was not run: {exc.message}")
        return
    target, env = client_environment(conninfo)
    try:
        proc = runner.run(
            [tool, "--install-missing", "--no-strict-names", target],
            env=env,
            check=False,
            timeout_s=max(timeout_s, 60.0),
        )
    except runner.TimedOut:
        report.skip(
            "storage",
            f"pg_amcheck did not finish within {max(timeout_s, 60.0):g} s; "
            "storage results are partial (raise --timeout).",
            partial=True,
        )
        return
    output = proc.stdout + proc.stderr
    if proc.returncode == 0:
        report.notes.append("pg_amcheck found no corruption in heap tables and B-tree indexes.")
        return
    problems = parse_amcheck(proc.stdout)
    lowered = output.lower()
    if not problems or "permission denied" in lowered or "must be superuser" in lowered:
        report.skip(
            "storage", f"pg_amcheck could not check this database: {runner.last_line(output)}"
        )
        return
    for relation, lines in problems.items():
        kind, _, name = relation.partition(" ")
        report.add(
            Finding(
                "storage",
                "amcheck",
                "critical",
                f"pg_amcheck found {len(lines) or 1} problem(s) in {relation}: "
                f"{lines[0] if lines else 'corrupt'}",
                table=name,
                name=kind,
                count=len(lines) or 1,
                samples=lines[:5],
            )
        )
