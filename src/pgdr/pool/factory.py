"""psycopg connections and psycopg_pool pools configured from :class:`PoolSettings`."""

from __future__ import annotations

import math
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from pgdr.config.pool_settings import PoolSettings
from pgdr.errors import RuntimeFailure

APPLICATION_NAME = "pgdr"


def connect_kwargs(settings: PoolSettings) -> dict[str, Any]:
    """libpq parameters every pgdr connection carries."""
    return {
        "connect_timeout": max(2, math.ceil(settings.connection_timeout_s)),
        "application_name": APPLICATION_NAME,
    }


def connect(
    conninfo: str, settings: PoolSettings | None = None, **kwargs: Any
) -> psycopg.Connection[TupleRow]:
    """One connection, with a clear error instead of a libpq message dump on failure."""
    params = connect_kwargs(settings or PoolSettings()) | kwargs
    try:
        return psycopg.connect(conninfo, **params)
    except psycopg.OperationalError as exc:
        raise RuntimeFailure(
            f"Cannot connect to the database: {describe_connect_error(exc)}"
        ) from exc


def describe_connect_error(exc: BaseException) -> str:
    """libpq's multi-line error reduced to its most telling sentence."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        lowered = line.lower()
        if "password authentication failed" in lowered:
            return "the password was rejected (password authentication failed)."
        if "timeout expired" in lowered:
            return "the server did not answer before the connection timeout."
        if "connection refused" in lowered:
            return "the server refused the connection (is it running, on that port?)."
        if "does not exist" in lowered:
            return line.split("FATAL:", 1)[-1].strip().rstrip(".") + "."
    return (lines[-1] if lines else "unknown error").rstrip(".") + "."


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
