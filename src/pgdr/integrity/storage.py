"""Storage-level checks: the server's data checksum failure counters and ``pg_amcheck``.

Checksum counters cost nothing and always run; checksums being off is itself a finding (damage
goes unnoticed until a read trips over it, possibly crashing the backend). ``pg_amcheck``
(``--deep``) reads every heap and B-tree index page, so it is opt-in; it runs with the client
binaries matching the server's major version, and installs the ``amcheck`` contrib extension if
the database lacks it. Every relation it finds damaged is a P0 finding on the table that owns it
(a TOAST table or index is charged to its table), and the caller never reads that table.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from pgdr.cluster import installation_for_major
from pgdr.core import runner
from pgdr.core.connect import client_environment
from pgdr.core.errors import PgdrError
from pgdr.core.severity import Severity
from pgdr.integrity.findings import Finding, Report

_HEADER = re.compile(r'^(heap table|btree index|toast table)\s+"([^"]+)"(.*?):?\s*$')


def check_checksums(conn: psycopg.Connection[Any], report: Report) -> None:
    """A critical finding when the server counted checksum failures in this database."""
    row = conn.execute("SELECT current_setting('data_checksums')").fetchone()
    enabled = bool(row and row[0] == "on")
    if not enabled:
        report.add(
            Finding(
                "storage",
                "checksums_off",
                "warning",
                "Data checksums are disabled on this cluster: damaged pages go unnoticed until "
                "a query reads them (which can crash the server). Enable them offline with "
                "`pg_checksums --enable -D <data directory>` while the cluster is stopped; until "
                "then run `pgdr check --deep` (pg_amcheck) to find damage.",
            )
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


def check_amcheck(
    conninfo: str, major: int, report: Report, timeout_s: float
) -> dict[str, list[str]]:
    """Run pg_amcheck over the whole database: ``{"heap table db.s.t": [problem, ...]}``."""
    try:
        tool = installation_for_major(major).tool("pg_amcheck")
    except PgdrError as exc:
        report.skip("storage", f"pg_amcheck was not run: {exc.message}")
        return {}
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
        return {}
    output = proc.stdout + proc.stderr
    if proc.returncode == 0:
        report.notes.append("pg_amcheck found no corruption in heap tables and B-tree indexes.")
        return {}
    problems = parse_amcheck(proc.stdout)
    lowered = output.lower()
    if not problems or "permission denied" in lowered or "must be superuser" in lowered:
        report.skip(
            "storage", f"pg_amcheck could not check this database: {runner.last_line(output)}"
        )
        return {}
    return problems


_OWNER = """
SELECT r.key, tn.nspname || '.' || t.relname
FROM unnest(%s::text[], %s::text[], %s::text[]) AS r(key, nsp, rel)
JOIN pg_class c ON c.oid = to_regclass(format('%%I.%%I', r.nsp, r.rel))
LEFT JOIN pg_index i ON i.indexrelid = c.oid
LEFT JOIN pg_class o ON o.reltoastrelid = coalesce(i.indrelid, c.oid)
JOIN pg_class t ON t.oid = coalesce(o.oid, i.indrelid, c.oid)
JOIN pg_namespace tn ON tn.oid = t.relnamespace
"""


def damaged_tables(
    conn: psycopg.Connection[Any], problems: dict[str, list[str]], report: Report
) -> set[str]:
    """One P0 finding per damaged relation, on the table owning it; those tables' names."""
    keys, nsps, rels = [], [], []
    for relation in problems:
        _kind, _, name = relation.partition(" ")
        parts = name.split(".")
        if len(parts) >= 3:  # database.schema.relation
            keys.append(relation)
            nsps.append(parts[-2])
            rels.append(parts[-1])
    owners = {str(k): str(t) for k, t in conn.execute(_OWNER, (keys, nsps, rels))}
    for relation, lines in problems.items():
        kind, _, name = relation.partition(" ")
        table = owners.get(relation)
        report.add(
            Finding(
                "storage",
                "amcheck",
                "critical",
                f"pg_amcheck found {len(lines) or 1} problem(s) in {relation}"
                + (f" (table {table}, not read by this check)" if table else "")
                + f": {lines[0] if lines else 'corrupt'}",
                table=table or name,
                name=kind,
                count=len(lines) or 1,
                samples=lines[:5],
                details={"relation": name},
                level=Severity.P0,
            )
        )
    return set(owners.values())
