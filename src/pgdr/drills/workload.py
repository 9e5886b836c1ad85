"""The drill's workload writer: small transactions committed continuously, each one recorded.

Every round the writer commits a tick (``INSERT INTO drill_ticks``) and one write of the
application, in turn: a message in an existing conversation, a new conversation under a chatbot,
an embedding (with a real vector) under a chatbot, and an update of a user (a marker appended to
``full_name``). These are the very tables the disasters damage and the recoveries repair. A
write is recorded (table, key, marker, commit time) only once the server acknowledged its
commit. After a recovery, the acknowledged writes missing from the database, or whose update was
reverted (its marker gone), are the data loss (RPO), counted per table rather than guessed.
Failed or unacknowledged writes are not losses: the application was told they failed (a parent
just deleted, the database read-only or down). An update that matched no row (its user deleted)
is not a write either.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from pgdr.core.connect import connect

TICKS = "drill_ticks"
TICKS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TICKS} (
    id bigint PRIMARY KEY,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""
# table -> (key column, column holding an update's marker)
TABLES = {
    TICKS: ("id", None),
    "public.messages": ("id", None),
    "public.conversations": ("id", None),
    "public.embeddings": ("id", None),
    "public.users": ("id", "full_name"),
}
OPS = ("message", "conversation", "embedding", "user")


@dataclass
class Write:
    """One acknowledged commit: the row it wrote (``marker``: what an update put in it)."""

    table: str
    key: str
    committed_at: datetime
    marker: str | None = None


@dataclass
class Context:
    """The existing rows the application writes under, read once before the workload starts."""

    chatbots: list[str]
    conversations: list[str]
    users: list[str]
    vector: str | None  # the text form of a real vector, or None when no row has one


def read_context(conn: psycopg.Connection[Any]) -> Context:
    def ids(query: str) -> list[str]:
        return [str(r[0]) for r in conn.execute(query).fetchall()]

    row = conn.execute(
        "SELECT embedding::text FROM embeddings WHERE embedding IS NOT NULL ORDER BY id LIMIT 1"
    ).fetchone()
    return Context(
        ids("SELECT id FROM chatbots ORDER BY id"),
        ids("SELECT id FROM conversations ORDER BY id"),
        ids("SELECT id FROM users ORDER BY id"),
        str(row[0]) if row else None,
    )


@dataclass
class WorkloadWriter:
    """A thread committing a tick and an application write every ``interval`` seconds."""

    conninfo: str
    interval: float = 0.02
    acked: list[Write] = field(default_factory=list)
    failures: int = 0
    last_error: str | None = None
    context: Context | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _next_id: int = 1
    _turn: int = 0  # whose turn among OPS
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _random: random.Random = field(default_factory=lambda: random.Random(14))  # noqa: S311 (not crypto)

    def prepare(self) -> None:
        with connect(self.conninfo, autocommit=True) as conn:
            conn.execute(TICKS_TABLE)
            self.context = read_context(conn)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pgdr-drill-workload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self) -> list[Write]:
        with self._lock:
            return list(self.acked)

    def ticks(self) -> int:
        return sum(1 for w in self.snapshot() if w.table == TICKS)

    def wait_for_ticks(self, n: int, timeout: float = 60) -> None:
        """Until at least ``n`` more ticks are acknowledged (the workload really runs)."""
        goal = self.ticks() + n
        deadline = time.monotonic() + timeout
        while self.ticks() < goal:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the workload committed nothing for {timeout:g} s")
            time.sleep(0.02)

    def _connect(self) -> psycopg.Connection[Any]:
        return connect(self.conninfo, autocommit=True, timeout_s=2, raw_errors=True)

    def _tick(self, conn: psycopg.Connection[Any], n: int) -> Write | None:
        row = conn.execute(
            f"INSERT INTO {TICKS} (id) VALUES (%s) RETURNING committed_at", (n,)
        ).fetchone()
        return Write(TICKS, str(n), row[0]) if row else None

    def _app_write(self, conn: psycopg.Connection[Any], n: int) -> Write | None:
        """The ``n``-th application write (its kind in turn), or None when it wrote nothing."""
        ctx, pick = self.context, self._random.choice
        assert ctx is not None
        self._turn += 1
        op = OPS[self._turn % len(OPS)]
        query: str
        args: tuple[str, ...]
        if op == "message" and ctx.conversations:
            query, args = (
                "INSERT INTO messages (conversation_id, role, content) VALUES (%s, 'user', %s)"
                " RETURNING id::text, clock_timestamp()",
                (pick(ctx.conversations), f"drill message {n}"),
            )
        elif op == "conversation" and ctx.chatbots:
            new = str(uuid.UUID(int=self._random.getrandbits(128), version=4))
            query, args = (
                "INSERT INTO conversations (id, chatbot_id, visitor_id) VALUES (%s, %s, %s)"
                " RETURNING id::text, clock_timestamp()",
                (new, pick(ctx.chatbots), f"drill-visitor-{n}"),
            )
        elif op == "embedding" and ctx.chatbots and ctx.vector:
            query, args = (
                "INSERT INTO embeddings (chatbot_id, content, embedding) VALUES (%s, %s, %s)"
                " RETURNING id::text, clock_timestamp()",
                (pick(ctx.chatbots), f"drill chunk {n}", ctx.vector),
            )
        elif op == "user" and ctx.users:
            return self._update_user(conn, pick(ctx.users), n)
        else:
            return None
        row = conn.execute(query, args).fetchone()
        if row is None:
            return None
        if op == "conversation":
            ctx.conversations.append(str(row[0]))
        return Write(f"public.{op}s", str(row[0]), row[1])

    def _update_user(self, conn: psycopg.Connection[Any], user: str, n: int) -> Write | None:
        marker = f"#{n};"
        row = conn.execute(
            "UPDATE users SET full_name = full_name || %s, updated_at = clock_timestamp()"
            " WHERE id = %s RETURNING clock_timestamp()",
            (marker, user),
        ).fetchone()
        return Write("public.users", user, row[0], marker) if row else None

    def _write(self, conn: psycopg.Connection[Any], tick: bool) -> None:
        n = self._next_id
        self._next_id += 1  # an unacknowledged id is never reused
        write = self._tick(conn, n) if tick else self._app_write(conn, n)
        if write is not None:
            with self._lock:
                self.acked.append(write)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            for tick in (True, False):
                try:
                    if conn is None or conn.closed:
                        conn = self._connect()
                    self._write(conn, tick)
                except psycopg.Error as exc:
                    conn = self._failed(conn, exc)
                    self._stop.wait(0.1)
            self._stop.wait(self.interval)
        if conn is not None:
            conn.close()

    def _failed(
        self, conn: psycopg.Connection[Any] | None, exc: psycopg.Error
    ) -> psycopg.Connection[Any] | None:
        """Count the failure; the connection to keep (None: reconnect)."""
        self.failures += 1
        self.last_error = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        read_only = isinstance(exc, psycopg.errors.ReadOnlySqlTransaction)
        if conn is not None and (conn.closed or conn.broken or read_only):
            # a session opened in read-only mode stays so: reconnect to see it end
            conn.close()
            return None
        return conn


@dataclass
class LossCount:
    """Acknowledged writes missing from a database (per table), and the time span they cover."""

    acknowledged: int
    missing: int
    seconds: float
    newest_acknowledged: str | None
    newest_present: str | None
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    acked: list[Write] = field(default_factory=list, repr=False)  # every acknowledged write
    lost: list[Write] = field(default_factory=list, repr=False)  # those missing

    def as_dict(self) -> dict[str, Any]:
        ticks = self.tables.get(TICKS, {})
        return {
            "acknowledged_writes": self.acknowledged,
            "missing_writes": self.missing,
            "acknowledged_ticks": ticks.get("acknowledged", 0),
            "missing_ticks": ticks.get("missing", 0),
            "tables": self.tables,
            "seconds": round(self.seconds, 3),
            "newest_acknowledged": self.newest_acknowledged,
            "newest_present": self.newest_present,
        }


def _present(conn: psycopg.Connection[Any], table: str, writes: list[Write]) -> set[int]:
    """The indexes of ``writes`` (all of ``table``) whose row, and marker, are there."""
    key, marker = TABLES[table]
    schema, _dot, name = table.rpartition(".")
    ident = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    column = sql.Identifier(marker) if marker else sql.SQL("NULL")
    rows = conn.execute(
        sql.SQL(
            "SELECT {key}::text, {column}::text FROM {table} WHERE {key}::text = ANY(%s)"
        ).format(key=sql.Identifier(key), column=column, table=ident),
        (sorted({w.key for w in writes}),),
    ).fetchall()
    found = {str(r[0]): r[1] for r in rows}
    return {
        i
        for i, w in enumerate(writes)
        if w.key in found and (w.marker is None or w.marker in (found[w.key] or ""))
    }


def count_loss(conninfo: str, acked: list[Write]) -> LossCount:
    """Compare the acknowledged writes with the rows present at ``conninfo``.

    ``seconds`` is the span of the lost work: from the newest acknowledged write still present
    that was committed before the oldest missing one, to the newest missing one (0 when nothing
    is missing). A loss in the middle (updates reverted by a repair) counts like one at the end.
    """
    missing: list[Write] = []
    kept: list[Write] = []
    tables: dict[str, dict[str, int]] = {}
    with connect(conninfo, autocommit=True) as conn:
        for table in TABLES:
            writes = [w for w in acked if w.table == table]
            there = _present(conn, table, writes) if writes else set()
            kept += [w for i, w in enumerate(writes) if i in there]
            missing += [w for i, w in enumerate(writes) if i not in there]
            tables[table] = {"acknowledged": len(writes), "missing": len(writes) - len(there)}
    seconds = 0.0
    if missing:
        oldest = min(w.committed_at for w in missing)
        before = [w.committed_at for w in kept if w.committed_at < oldest]
        seconds = (
            max(w.committed_at for w in missing) - max(before, default=oldest)
        ).total_seconds()
    newest_kept = max((w.committed_at for w in kept), default=None)
    newest_acked = max((w.committed_at for w in acked), default=None)
    return LossCount(
        acknowledged=len(acked),
        missing=len(missing),
        seconds=max(0.0, seconds),
        newest_acknowledged=newest_acked.isoformat() if newest_acked else None,
        newest_present=newest_kept.isoformat() if newest_kept else None,
        tables=tables,
        acked=list(acked),
        lost=missing,
    )
