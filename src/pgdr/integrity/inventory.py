"""Pre-migration inventories: the runbook's embeddings and knowledge-base inventory CSVs.

For every embedding source of the profile: rows, rows with a vector, required vectors missing
and vectors not required, per group (chatbot), in one grouped query per source (the shared
definition of profile/required.py). ``compare_inventory`` checks a database against a saved
inventory after a migration or a restore: every group back to its row count, and every vector the
profile **requires** present again. Vectors that are not required (chatbots that are not
``ready``, disabled entries) never keep the comparison failing; they are reported by cause.
"""

from __future__ import annotations

import csv
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgdr.core.connect import redact
from pgdr.core.errors import ConfigError
from pgdr.core.records import new_record_id
from pgdr.integrity.catalog import read_catalog
from pgdr.integrity.findings import Finding, Report
from pgdr.integrity.run import database_errors, open_checked
from pgdr.integrity.snapshot import run_one
from pgdr.profile import Profile
from pgdr.profile.required import counts_query, not_required_causes

INVENTORY_VERSION = 1
SHOWN_GROUPS = 50


def take_inventory(
    conninfo: str, profile: Profile, timeout_s: float = 300.0, report: Report | None = None
) -> dict[str, Any]:
    report = report or Report("inventory", redact(conninfo), profile.name)
    sources: dict[str, Any] = {}
    with database_errors("The inventory"), open_checked(conninfo, timeout_s) as conn:
        catalog = read_catalog(conn)
        for src in profile.embeddings:
            info = catalog.find(src.table, profile.schema_name)
            needed = [src.vector] + ([src.group_by] if src.group_by else [])
            if info is None or any(c not in info.columns for c in needed):
                report.skip(
                    "inventory",
                    f"embedding source {src.name}: table {src.table} or its columns "
                    f"({', '.join(needed)}) do not exist.",
                )
                continue
            query = counts_query(src, profile.schema_name)
            rows = run_one(conn, query, report, info.qualified, timeout_s, many=True)
            if rows is None:
                continue
            groups = {
                str(g): {"rows": int(n), "with_vector": int(v), "missing": int(m)}
                for g, n, v, m, _free in rows
            }
            not_required = sum(int(r[4]) for r in rows)
            sources[src.name] = {
                "not_required": not_required,
                "by_cause": (
                    not_required_causes(conn, src, profile.schema_name) if not_required else []
                ),
                "table": info.qualified,
                "group_by": src.group_by,
                "vector": src.vector,
                "rows": sum(g["rows"] for g in groups.values()),
                "with_vector": sum(g["with_vector"] for g in groups.values()),
                "groups": dict(sorted(groups.items())),
            }
    return {
        "version": INVENTORY_VERSION,
        "kind": "inventory",
        "id": new_record_id(),
        "taken_at": datetime.now(UTC).isoformat(),
        "database": redact(conninfo),
        "profile": profile.name,
        "sources": sources,
    }


def write_csv(inventory: dict[str, Any], directory: Path, force: bool = False) -> list[Path]:
    """``<source>-inventory.csv`` per source: group, rows, rows with a vector."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, src in inventory["sources"].items():
        path = directory / f"{name}-inventory.csv"
        if path.exists() and not force:
            raise ConfigError(f"{path} already exists; pass --force to replace it.")
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([src["group_by"] or "group", "rows", "with_vector"])
            for group, counts in src["groups"].items():
                writer.writerow([group, counts["rows"], counts["with_vector"]])
        paths.append(path)
    return paths


def compare_inventory(
    conninfo: str, baseline: dict[str, Any], profile: Profile, timeout_s: float = 300.0
) -> Report:
    """Every group (chatbot) back to its row count and its vectors, per source."""
    started = time.perf_counter()
    report = Report("inventory-compare", redact(conninfo), profile.name)
    now = take_inventory(conninfo, profile, timeout_s, report)
    sections = []
    for name, before in sorted(baseline.get("sources", {}).items()):
        current = now["sources"].get(name)
        if current is None:
            report.add(
                Finding(
                    "inventory",
                    "source_missing",
                    "critical",
                    f"Embedding source {name} ({before['table']}) could not be counted now; "
                    f"it had {before['rows']:,} rows.",
                    table=before["table"],
                    name=name,
                )
            )
            continue
        sections.append(_compare_source(report, name, before, current))
    report.sections = {
        "baseline": {k: baseline.get(k) for k in ("id", "taken_at", "database", "profile")},
        "sources": sections,
    }
    report.duration_s = time.perf_counter() - started
    return report


def _compare_source(
    report: Report, name: str, before: dict[str, Any], current: dict[str, Any]
) -> dict[str, Any]:
    """Findings for one source's short groups and unrequired vectors; its report section."""
    short_rows: list[dict[str, Any]] = []
    short_vectors: list[dict[str, Any]] = []
    for group, was in before["groups"].items():
        got = current["groups"].get(group, {"rows": 0, "with_vector": 0})
        entry = {"group": group, "before": was, "now": got}
        if got["rows"] < was["rows"]:
            short_rows.append(entry)
        if got.get("missing", got["rows"] - got["with_vector"]) > 0:
            short_vectors.append(entry)
    for finding in _short_findings(name, before, short_rows, short_vectors):
        report.add(finding)
    for cause in current["by_cause"]:
        report.add(
            Finding(
                "inventory",
                "not_required",
                "info",
                cause["sentence"],
                table=before["table"],
                name=name,
                count=cause["vectors"],
                details={"cause": cause["cause"], "groups": cause["groups"]},
            )
        )
    incomplete = {e["group"]: e for e in short_rows + short_vectors}
    return {
        "source": name,
        "table": before["table"],
        "groups_before": len(before["groups"]),
        "groups_now": len(current["groups"]),
        "groups_complete": len(before["groups"]) - len(incomplete),
        "rows": {"before": before["rows"], "now": current["rows"]},
        "with_vector": {"before": before["with_vector"], "now": current["with_vector"]},
        "not_required": current["not_required"],
        "incomplete": list(incomplete.values())[:SHOWN_GROUPS],
    }


def _short_findings(
    name: str,
    before: dict[str, Any],
    short_rows: list[dict[str, Any]],
    short_vectors: list[dict[str, Any]],
) -> list[Finding]:
    """Critical findings for groups with fewer rows, and groups lacking required vectors."""
    table = before["table"]
    group_word = before["group_by"] or "group"
    kinds = (
        (
            "rows_short",
            short_rows,
            "have fewer rows than in the inventory",
            "rows",
            sum(e["before"]["rows"] - e["now"]["rows"] for e in short_rows),
            before["rows"],
        ),
        (
            "vectors_short",
            short_vectors,
            "lack vectors the profile requires",
            "vectors",
            sum(e["now"]["missing"] for e in short_vectors),
            before["with_vector"],
        ),
    )
    return [
        Finding(
            "inventory",
            code,
            "critical",
            f"{len(groups):,} {group_word} group(s) of {table} {what} "
            f"({missing:,} {unit} missing).",
            table=table,
            name=name,
            count=missing,
            rows=rows,
            samples=[e["group"] for e in groups[:5]],
        )
        for code, groups, what, unit, missing, rows in kinds
        if groups
    ]
