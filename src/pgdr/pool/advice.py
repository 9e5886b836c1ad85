"""``pgdr pool advise``: the runbook's rule that a pool takes 60-70% of the connection limit.

The limit is the plan's (``--limit``: a number, or the runbook's tiers by name, Free 60 and Pro
200) or else the server's ``max_connections`` minus its reserved slots. The advice never names an
empty range: when 60-70% of the limit leaves less than one connection per instance, it says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from pgdr.config.pool_settings import PoolSettings
from pgdr.core.errors import ConfigError

LOW_SHARE = 0.60
HIGH_SHARE = 0.70
PLAN_LIMITS = {"free": 60, "pro": 200}  # the runbook's tiers (concurrent connections)


def plan_limit(text: str) -> int:
    """``free``, ``pro`` or a positive number of connections."""
    named = PLAN_LIMITS.get(text.strip().lower())
    if named is not None:
        return named
    if text.strip().isdigit() and int(text) > 0:
        return int(text)
    tiers = ", ".join(f"{k} ({v})" for k, v in PLAN_LIMITS.items())
    raise ConfigError(f"--limit must be a positive number of connections or {tiers}, not {text!r}.")


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
    conn: psycopg.Connection[Any],
    settings: PoolSettings,
    instances: int = 1,
    limit: int | None = None,
) -> PoolAdvice:
    """Compare ``DB_POOL_MAX`` x ``instances`` with 60-70% of the plan's ``limit`` (default: the
    server's usable connections)."""
    max_connections = _setting(conn, "max_connections")
    reserved = _setting(conn, "superuser_reserved_connections") + _setting(
        conn, "reserved_connections"
    )
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    ).fetchone()
    in_use = int(row[0]) if row else 0
    usable = limit if limit is not None else max(0, max_connections - reserved)
    low = math.floor(usable * LOW_SHARE / instances)
    high = math.floor(usable * HIGH_SHARE / instances)
    total = settings.max_size * instances
    over = settings.max_size > high
    if high < 1:
        low, high, over = 1, 1, True
        message = (
            f"A limit of {usable} connection(s) shared by {instances} instance(s) leaves less "
            "than one connection per instance at the runbook's 60-70%; run fewer instances or "
            "take a larger plan (--limit pro)."
        )
    elif over:
        message = (
            f"DB_POOL_MAX={settings.max_size} is over the runbook's limit: with {instances} "
            f"instance(s) it may open {total} of {usable} usable connections; "
            f"set DB_POOL_MAX to {max(low, 1)}-{high}."
        )
    else:
        message = (
            f"DB_POOL_MAX={settings.max_size} is within the runbook's rule "
            f"(at most {high} per instance for {instances} instance(s))."
        )
    low = max(low, 1)
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
