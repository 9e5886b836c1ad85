"""Scenario 3, accidental deletion: the disaster, the deleting transaction pgdr finds in the
WAL, and the rows it puts back.

The monitor's ``rows_fell`` check names the tables whose rows went; the deletion started at the
one whose own parents kept their rows (the chatbot; its conversations, messages, embeddings and
knowledge base went with it by cascade). ``wal find`` on that table, deletions only, since the
last clean monitor round names the deleting transaction; a scratch copy is restored to just
before it (``--target-xid X --exclusive``, what ``pgdr undelete --at auto`` does), and the rows
of that table present in the copy but missing from production are put back with their
children. The harness knows which chatbot it deleted only to check the result.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from psycopg import sql

from pgdr.core.connect import connect
from pgdr.core.errors import CheckFailed
from pgdr.drills.common import Drill
from pgdr.drills.detect import Detection
from pgdr.incident.readonly import Scope, set_read_only
from pgdr.integrity.catalog import read_catalog
from pgdr.restore.rows import recover_rows
from pgdr.restore.target import Target
from pgdr.wal.find import find_changes

# what goes with a chatbot (ON DELETE CASCADE), counted by the disaster itself
CHILDREN = {
    "public.conversations": "SELECT count(*) FROM conversations WHERE chatbot_id = %s",
    "public.messages": "SELECT count(*) FROM messages m JOIN conversations v "
    "ON v.id = m.conversation_id WHERE v.chatbot_id = %s",
    "public.embeddings": "SELECT count(*) FROM embeddings WHERE chatbot_id = %s",
    "public.knowledge_base": "SELECT count(*) FROM knowledge_base WHERE chatbot_id = %s",
}


def _name(table: str) -> str:
    return table.rpartition(".")[2]


def busiest_chatbot(url: str) -> str:
    """The chatbot with the most conversations, embeddings and knowledge base rows."""
    with connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT c.id::text FROM chatbots c ORDER BY "
            "(SELECT count(*) FROM conversations v WHERE v.chatbot_id = c.id) + "
            "(SELECT count(*) FROM embeddings e WHERE e.chatbot_id = c.id) + "
            "(SELECT count(*) FROM knowledge_base k WHERE k.chatbot_id = c.id) DESC, c.id "
            "LIMIT 1"
        ).fetchone()
    assert row is not None
    return str(row[0])


def delete_chatbot(d: Drill, chatbot: str) -> float:
    """The disaster: the chatbot deleted while the workload writes under it too. Its rows are
    locked first (new children wait, then fail) so the rows counted are the rows deleted.
    Returns the wall-clock time from which the WAL must be streamed."""
    r = d.report
    with r.step(
        "Disaster: a chatbot is deleted (cascading to its conversations, messages, embeddings "
        "and knowledge base) while the workload runs",
        f"DELETE FROM chatbots WHERE id = '{chatbot}'",
        phase="disaster",
    ) as step:
        with connect(d.sandbox.url, autocommit=True) as conn, conn.transaction():
            conn.execute("SELECT 1 FROM chatbots WHERE id = %s FOR UPDATE", (chatbot,))
            conn.execute("SELECT 1 FROM conversations WHERE chatbot_id = %s FOR UPDATE", (chatbot,))
            counts = {"public.chatbots": 1}
            for table, query in CHILDREN.items():
                row = conn.execute(query, (chatbot,)).fetchone()
                counts[table] = int(row[0]) if row else 0
            conn.execute("DELETE FROM chatbots WHERE id = %s", (chatbot,))
        d.disaster()
        r.facts["rows_deleted"] = {t: n for t, n in counts.items() if n}
        step.detail = ", ".join(f"{t} {n}" for t, n in counts.items() if n) + " deleted"
    return time.time()


def read_only(d: Drill, on: bool) -> None:
    """The runbook's "stop further operations" (and its end)."""
    title, command = (
        ("Stop further writes: read-only mode on", "pgdr readonly on --terminate")
        if on
        else ("Read-only mode off", "pgdr readonly off")
    )
    with (
        d.report.step(title, command, phase="restore") as step,
        connect(d.sandbox.url, autocommit=True) as conn,
    ):
        state = set_read_only(conn, on, Scope.DATABASE, terminate=on)
        if on:
            step.detail = f"read-only; {state.terminated_sessions} session(s) ended"


def _root(d: Drill, fell: list[str]) -> str:
    """Of the tables whose rows went, the one none of whose parents lost rows."""
    with connect(d.sandbox.url, autocommit=True) as conn:
        catalog = read_catalog(conn)
    parents = {t: {fk.parent for fk in catalog.foreign_keys if fk.child == t} for t in fell}
    roots = [t for t in fell if not parents[t] & set(fell)]
    if len(roots) != 1:
        raise CheckFailed(f"The deletion has no single starting table ({', '.join(fell)}).")
    return roots[0]


def find_deletion(d: Drill, found: Detection) -> tuple[str, Target]:
    """``wal find --op delete`` on the table the deletion started at, since the last clean
    monitor round: the deleting transaction, and the target just before it."""
    sb, r = d.sandbox, d.report
    result = found.result("rows_fell")
    fell = list((result.details[0] if result and result.details else {}).get("tables", {}))
    if not fell or found.last_clean is None:
        raise CheckFailed("The rows_fell incident names no table, or no clean round precedes it.")
    table = _root(d, fell)
    since = datetime.fromtimestamp(found.last_clean.began, UTC)
    with r.step(
        "Identify the deletion: the deleting transaction in the WAL since the last clean "
        "monitor round",
        f"pgdr wal find --table {_name(table)} --op delete --since {since.isoformat()}",
        phase="restore",
    ) as step:
        sb.wait_streamed(since=found.first_failing.ended)
        report = find_changes(
            sb.archive(), sb.repo.list_backups(), sb.url, table, since=since, op="delete"
        )
        tx = report.suspect_transaction()
        if tx is None:
            raise CheckFailed(f"wal find names no deletion from {table} since {since}.")
        r.facts["recovery_point"] = {
            "how": f"wal find on {table} (where the rows_fell incident's deletion started), "
            "deletions since the last clean monitor round",
            "window": [since.isoformat(), None],
            "xid": tx.xid,
            "commit_time": tx.commit_time,
            "rows_deleted": tx.rows["delete"],
            "target": f"--target-xid {tx.xid} --exclusive",
        }
        step.detail = (
            f"transaction {tx.xid} deleted {tx.rows['delete']} row(s) of {table}, committed "
            f"{tx.commit_time}"
        )
    return table, Target("xid", str(tx.xid), exclusive=True)


def _keys(url: str, table: str) -> set[str]:
    query = sql.SQL("SELECT id::text FROM {}").format(sql.Identifier(*table.split(".")))
    with connect(url, autocommit=True) as conn:
        return {str(r[0]) for r in conn.execute(query).fetchall()}


def _missing_keys(scratch: str, production: str, table: str) -> list[str]:
    """Keys of ``table`` in the scratch copy that production no longer has."""
    return sorted(_keys(scratch, table) - _keys(production, table))


def put_back(d: Drill, scratch: str, table: str) -> None:
    """Re-insert the rows of ``table`` missing from production, with their children."""
    sb, r = d.sandbox, d.report
    keys = _missing_keys(scratch, sb.url, table)
    with r.step(
        "Re-insert exactly the deleted rows from the scratch copy, parents first",
        "export SCRATCH_URL=<scratch server>",
        f"pgdr recover rows --from-env SCRATCH_URL --table {_name(table)} "
        + " ".join(f"--key {k}" for k in keys)
        + " --with-children",
        phase="restore",
    ) as step:
        if not keys:
            raise CheckFailed(f"The scratch copy holds no row of {table} missing from production.")
        rows = recover_rows(scratch, sb.url, _name(table), keys, with_children=True)
        r.facts["keys_put_back"] = keys
        r.facts["rows_reinserted"] = {t.table: t.inserted for t in rows.tables}
        step.detail = ", ".join(f"{t.table} {t.inserted}" for t in rows.tables)
