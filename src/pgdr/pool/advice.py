"""``pgdr pool advise``: the runbook's rule that a pool takes 60-70% of the server's connections."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from pgdr.config.pool_settings import PoolSettings

LOW_SHARE = 0.60
HIGH_SHARE = 0.70


@dataclass
class PoolAdvice:
    max_connections: int
    reserved: int
    usable: int
    in_use: int
    instances: int
    configured_max: int
    configured_total: int
    recommended_low: int
    recommended_high: int
    over_limit: bool
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _setting(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def advise_pool(
    conn: psycopg.Connection[Any], settings: PoolSettings, instances: int = 1
) -> PoolAdvice:
    """Compare ``DB_POOL_MAX`` x ``instances`` with 60-70% of the server's usable connections."""
    max_connections = _setting(conn, "max_connections")
    reserved = _setting(conn, "superuser_reserved_connections") + _setting(
        conn, "reserved_connections"
    )
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    ).fetchone()
    in_use = int(row[0]) if row else 0
    usable = max(0, max_connections - reserved)
    low = math.floor(usable * LOW_SHARE / instances)
    high = math.floor(usable * HIGH_SHARE / instances)
    total = settings.max_size * instances
    over = settings.max_size > high
    if over:
        message = (
            f"DB_POOL_MAX={settings.max_size} is over the runbook's limit: with {instances} "
            f"instance(s) it may open {total} of {usable} usable connections; "
            f"set DB_POOL_MAX to {low}-{high}."
        )
    else:
        message = (
            f"DB_POOL_MAX={settings.max_size} is within the runbook's rule "
            f"(at most {high} per instance for {instances} instance(s))."
        )
    return PoolAdvice(
        max_connections,
        reserved,
        usable,
        in_use,
        instances,
        settings.max_size,
        total,
        low,
        high,
        over,
        message,
    )
