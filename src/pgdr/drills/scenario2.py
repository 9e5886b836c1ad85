"""Scenario 2, data corruption: the disaster, the recovery point pgdr finds, and option B.

The damaged tables come from the findings of the ``pgdr check`` record the monitor's
``integrity`` check read when it opened the incident: a table with critical findings (broken
vectors: its rows were *updated*) and the parent of every orphan finding (its rows were
*deleted*). The recovery point is found, never handed in: the last clean monitor round and the
first failing one bound the window, and ``wal find`` on each damaged table, for that operation,
names the transaction that stands out in it; the first of them (by WAL position) is the first
damaging transaction, and the copy is restored to just before it (``--target-xid X
--exclusive``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pgdr.core.connect import connect
from pgdr.core.errors import CheckFailed
from pgdr.drills.common import Drill
from pgdr.drills.detect import Detection
from pgdr.drills.workload import LossCount, count_loss
from pgdr.integrity.records import check_store
from pgdr.restore.rows import repair_tables
from pgdr.restore.target import Target
from pgdr.wal.find import Transaction, find_changes
from pgdr.wal.names import parse_lsn


def corrupt(d: Drill) -> float:
    """The disaster of scenario 2; the wall-clock time from which the WAL must be streamed."""
    with d.report.step(
        "Disaster: corruption: parents deleted behind the foreign keys' back, vectors lost",
        "SET session_replication_role = replica; DELETE FROM users WHERE ...",
        "UPDATE embeddings SET embedding = NULL WHERE ...",
        phase="disaster",
    ) as step:
        with connect(d.sandbox.url, autocommit=True) as conn, conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            users = conn.execute(
                "DELETE FROM users WHERE id IN (SELECT user_id FROM chatbots "
                "ORDER BY id LIMIT greatest(1, (SELECT count(*) FROM chatbots) / 20))"
            ).rowcount
            vectors = conn.execute(
                "UPDATE embeddings SET embedding = NULL WHERE id % 4 = 0"
            ).rowcount
        d.disaster()
        step.detail = f"{users} user(s) deleted under their chatbots, {vectors} vectors lost"
    return time.time()


def damaged_tables(findings: list[dict[str, Any]]) -> dict[str, str]:
    """The tables to repair and how their rows were damaged: the parent of an orphan finding
    lost rows (delete), a table with bad rows had them changed (update)."""
    tables: dict[str, str] = {}
    for f in findings:
        if f.get("severity") != "critical":
            continue
        parent = (f.get("details") or {}).get("parent")
        table, op = (str(parent), "delete") if parent else (f.get("table"), "update")
        if table and table not in tables:
            tables[str(table)] = op
    return tables


def _findings(d: Drill, found: Detection) -> list[dict[str, Any]]:
    """The findings of the check record the monitor's integrity check read."""
    result = found.result("integrity")
    record = (result.details[0] if result and result.details else {}).get("record")
    if record is None:
        raise CheckFailed("The incident names no `pgdr check` record to take the findings from.")
    data, _path = check_store(d.sandbox.records).load(str(record))
    findings: list[dict[str, Any]] = data.get("findings", [])
    return findings


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def find_recovery_point(d: Drill, found: Detection) -> tuple[Target, list[str]]:
    """The decision's second half: the damaged tables, and just before the first damaging
    transaction in the window of the monitor's rounds."""
    sb, r = d.sandbox, d.report
    with r.step(
        "Find the recovery point: the first damaging transaction between the last clean and "
        "the first failing monitor round",
        "pgdr wal find --table TABLE --op delete|update --since <clean round> --until <failing>",
        phase="decision",
    ) as step:
        damaged = damaged_tables(_findings(d, found))
        if found.last_clean is None or not damaged:
            raise CheckFailed("The monitor's rounds do not bound the damage (no clean round).")
        since = datetime.fromtimestamp(found.last_clean.began, UTC)
        until = datetime.fromtimestamp(found.first_failing.ended, UTC)
        sb.wait_streamed(since=found.first_failing.ended)
        suspects: dict[str, Transaction] = {}
        for table, op in damaged.items():
            report = find_changes(
                sb.archive(), sb.repo.list_backups(), sb.url, table, since=since, until=until, op=op
            )
            tx = report.suspect_transaction()
            if tx is not None:
                suspects[table] = tx
        if not suspects:
            raise CheckFailed("wal find names no damaging transaction in the window.")
        first = min(suspects.values(), key=lambda t: parse_lsn(t.first_lsn))
        r.facts["damaged_tables"] = list(damaged)
        r.facts["recovery_point"] = {
            "how": "wal find on the damaged tables (from the integrity findings) between the "
            "last clean and the first failing monitor round; the first damaging transaction",
            "window": [_iso(found.last_clean.began), _iso(found.first_failing.ended)],
            "transactions": {t: {"xid": x.xid, "op": damaged[t]} for t, x in suspects.items()},
            "xid": first.xid,
            "commit_time": first.commit_time,
            "target": f"--target-xid {first.xid} --exclusive",
        }
        step.detail = (
            f"damaged: {', '.join(damaged)}; transaction {first.xid} (committed "
            f"{first.commit_time}): restore to just before it"
        )
    return Target("xid", str(first.xid), exclusive=True), list(damaged)


def option_a(d: Drill, url: str) -> LossCount:
    """Option A (switch to the verified copy at ``url``): when it was ready, and the
    acknowledged writes made after the corruption that it would lose."""
    ready = time.monotonic() - d.disaster_mono
    window = count_loss(url, d.writer.snapshot())
    d.report.facts["option_a"] = {
        "rto_seconds": round(ready, 3),
        "corruption_window": window.as_dict(),
    }
    d.report.findings.append(
        f"Option A (switch to the copy) was ready after {ready:.1f} s, but "
        f"{window.missing} acknowledged write(s) made after the corruption "
        f"({window.seconds:.3f} s, and counting) would have to be re-applied."
    )
    return window


def repair(d: Drill, url: str, damaged: list[str]) -> None:
    """Option B: repair only the damaged tables in production from the copy at ``url``."""
    with d.report.step(
        "Recover (option B): repair only the damaged tables in production from the copy",
        "export COPY_URL=<copy>",
        "pgdr recover tables --from-env COPY_URL "
        + " ".join(f"--table {t.split('.')[-1]}" for t in damaged),
        phase="restore",
    ) as step:
        repaired = repair_tables(url, d.sandbox.url, damaged)
        d.report.facts["rows_repaired"] = {t.table: t.inserted for t in repaired}
        step.detail = ", ".join(f"{t.table} {t.inserted} row(s) put back" for t in repaired)


def choice(d: Drill, window: LossCount) -> None:
    ready = d.report.facts["option_a"]["rto_seconds"]
    d.report.facts["choice"] = (
        "Option B: the check names the damaged tables, so production is repaired in place "
        "from the copy restored to just before the corruption and keeps what was written "
        "since, except the rows of the repaired tables changed since (they go back; the RPO "
        f"counts them). Option A, the verified copy, was ready after {ready:.1f} s and stays "
        "the fallback when the damage cannot be confined to tables; it would have lost the "
        f"{window.missing} write(s) made after the corruption."
    )
