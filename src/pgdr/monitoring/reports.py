"""The runbook's "Manual Health Checks" as one structured report.

1. responsiveness (``SELECT now()``), 2. table sizes, 3. connection count, 4. long-running
queries, 5. table bloat — each the runbook's query, returning rows instead of text.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg

TABLE_SIZES = """
SELECT schemaname, tablename, pg_total_relation_size(format('%I.%I', schemaname, tablename))
FROM pg_tables
WHERE schemaname = 'public'
ORDER BY 3 DESC
"""

CONNECTIONS = """
SELECT count(*),
       count(*) FILTER (WHERE state = 'active'),
       count(*) FILTER (WHERE state = 'idle in transaction'),
       current_setting('max_connections')::int
FROM pg_stat_activity
WHERE backend_type = 'client backend'
"""

LONG_RUNNING = """
SELECT pid, extract(epoch FROM now() - query_start), left(query, 200), state
FROM pg_stat_activity
WHERE state != 'idle'
  AND backend_type = 'client backend'
  AND pid != pg_backend_pid()
  AND now() - query_start > make_interval(secs => %s)
ORDER BY 2 DESC
"""

BLOAT = """
SELECT schemaname, relname, pg_total_relation_size(relid), n_live_tup, n_dead_tup,
       round(n_dead_tup * 100.0 / NULLIF(n_live_tup + n_dead_tup, 0), 2)
FROM pg_stat_user_tables
WHERE n_dead_tup > %s
ORDER BY 6 DESC NULLS LAST
"""


@dataclass
class TableSize:
    schema: str
    table: str
    bytes: int


@dataclass
class LongQuery:
    pid: int
    seconds: float
    query: str
    state: str


@dataclass
class BloatedTable:
    schema: str
    table: str
    total_bytes: int
    live_tuples: int
    dead_tuples: int
    dead_pct: float | None


@dataclass
class DatabaseReport:
    server_time: datetime
    latency_ms: float
    connections: int
    active: int
    idle_in_transaction: int
    max_connections: int
    tables: list[TableSize] = field(default_factory=list)
    long_queries: list[LongQuery] = field(default_factory=list)
    bloat: list[BloatedTable] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_report(
    conn: psycopg.Connection[Any], long_query_seconds: float = 300, dead_tuple_floor: int = 1000
) -> DatabaseReport:
    """Run the five checks of the runbook on ``conn``."""
    started = time.perf_counter()
    now_row = conn.execute("SELECT now()").fetchone()
    latency = (time.perf_counter() - started) * 1000
    assert now_row is not None
    total, active, idle_tx, max_conn = conn.execute(CONNECTIONS).fetchone() or (0, 0, 0, 0)
    return DatabaseReport(
        server_time=now_row[0],
        latency_ms=round(latency, 2),
        connections=int(total),
        active=int(active),
        idle_in_transaction=int(idle_tx),
        max_connections=int(max_conn),
        tables=[TableSize(*row) for row in conn.execute(TABLE_SIZES).fetchall()],
        long_queries=[
            LongQuery(int(pid), round(float(secs), 1), str(query), str(state))
            for pid, secs, query, state in conn.execute(LONG_RUNNING, (long_query_seconds,))
        ],
        bloat=[
            BloatedTable(
                s, t, int(size), int(live), int(dead), float(pct) if pct is not None else None
            )
            for s, t, size, live, dead, pct in conn.execute(BLOAT, (dead_tuple_floor,))
        ],
    )
