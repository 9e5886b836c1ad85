"""psycopg connections and psycopg_pool pools configured from :class:`PoolSettings`.

Both go through ``pgdr.core.connect``: the same ``application_name``, the same libpq
``connect_timeout`` (``DB_CONNECTION_TIMEOUT`` rounded up to whole seconds, at least 2) and the
same one-sentence errors.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from pgdr.config.pool_settings import PoolSettings
from pgdr.core import connect as core_connect


def connect_kwargs(settings: PoolSettings) -> dict[str, Any]:
    """libpq parameters every pgdr connection carries, timed by the runbook's settings."""
    return core_connect.connect_kwargs(settings.connection_timeout_s)


def connect(
    conninfo: str, settings: PoolSettings | None = None, **kwargs: Any
) -> psycopg.Connection[TupleRow]:
    """One connection timed by ``settings``; a one-sentence error instead of libpq's dump."""
    timeout = (settings or PoolSettings()).connection_timeout_s
    return core_connect.connect(conninfo, timeout_s=timeout, **kwargs)


def make_pool(
    conninfo: str, settings: PoolSettings, *, open_now: bool = True, name: str = "pgdr"
) -> ConnectionPool:
    """A pool sized and timed exactly as the runbook's variables say."""
    return ConnectionPool(
        conninfo,
        min_size=settings.min_size,
        max_size=settings.max_size,
        timeout=settings.connection_timeout_s,
        max_idle=settings.idle_timeout_ms / 1000,
        max_lifetime=settings.max_lifetime_ms / 1000,
        reconnect_timeout=max(settings.connection_timeout_s * 3, 30.0),
        kwargs=connect_kwargs(settings),
        open=open_now,
        name=name,
    )
