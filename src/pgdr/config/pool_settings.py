"""The runbook's connection-pool variables, its four environment profiles, and their provenance.

Layers, lowest first: the runbook's defaults, the profile chosen by ``PGDR_ENV`` (or ``env`` in
``pgdr.toml``), the ``[pool]`` table of ``pgdr.toml``, then the ``DB_*`` environment variables.
Each effective value remembers which layer set it, so ``pgdr pool show`` can say so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pgdr.config.settings import PgdrSettings, load_toml
from pgdr.core.errors import ConfigError

# field name -> (environment variable, key in pgdr.toml's [pool] table)
POOL_VARIABLES: dict[str, tuple[str, str]] = {
    "max_size": ("DB_POOL_MAX", "max"),
    "min_size": ("DB_POOL_MIN", "min"),
    "connection_timeout_ms": ("DB_CONNECTION_TIMEOUT", "connection_timeout"),
    "idle_timeout_ms": ("DB_IDLE_TIMEOUT", "idle_timeout"),
    "max_lifetime_ms": ("DB_MAX_LIFETIME", "max_lifetime"),
}


# PostgreSQL's own limit for a timeout in milliseconds (a 32-bit int); also far above any sane pool.
MAX_VALUE = 2_147_483_647


class PoolSettings(BaseModel):
    """Pool sizes and timeouts, in the runbook's units (connections and milliseconds)."""

    max_size: int = 20
    min_size: int = 2
    connection_timeout_ms: int = 10_000
    idle_timeout_ms: int = 30_000
    max_lifetime_ms: int = 1_800_000

    @property
    def connection_timeout_s(self) -> float:
        return self.connection_timeout_ms / 1000


def _profile(max_: int, min_: int, conn: int, idle: int, life: int) -> dict[str, int]:
    return dict(
        zip(POOL_VARIABLES, (max_, min_, conn, idle, life), strict=True),
    )


# The runbook's "Recommended Settings by Environment", verbatim.
POOL_PROFILES: dict[str, dict[str, int]] = {
    "development": _profile(5, 1, 5_000, 60_000, 300_000),
    "staging": _profile(10, 2, 10_000, 30_000, 1_800_000),
    "production": _profile(20, 5, 10_000, 30_000, 1_800_000),
    "high-traffic": _profile(50, 10, 15_000, 20_000, 900_000),
}


@dataclass(frozen=True)
class ResolvedPoolSettings:
    """Effective pool settings and, for each field, the layer that set it."""

    settings: PoolSettings
    sources: dict[str, str]
    environment: str | None


def _parse_int(raw: Any, variable: str) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f"{variable} must be a whole number, not {raw!r}.")
    if isinstance(raw, int):
        value = raw
    else:
        text = str(raw).strip()
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{variable} must be a whole number, not {text!r}.") from None
    if value < 0:
        raise ConfigError(f"{variable} must not be negative (got {value}).")
    if value > MAX_VALUE:
        raise ConfigError(f"{variable} must be at most {MAX_VALUE} (got {value}).")
    return value


def _validate(values: dict[str, int]) -> PoolSettings:
    settings = PoolSettings(**values)
    if settings.max_size < 1:
        raise ConfigError("DB_POOL_MAX must be at least 1.")
    if settings.min_size > settings.max_size:
        raise ConfigError(
            f"DB_POOL_MIN ({settings.min_size}) must not exceed DB_POOL_MAX ({settings.max_size})."
        )
    if settings.connection_timeout_ms < 1000:
        raise ConfigError(
            "DB_CONNECTION_TIMEOUT must be at least 1000 ms "
            f"(got {settings.connection_timeout_ms})."
        )
    if settings.max_lifetime_ms < settings.idle_timeout_ms:
        raise ConfigError(
            f"DB_MAX_LIFETIME ({settings.max_lifetime_ms} ms) must not be shorter than "
            f"DB_IDLE_TIMEOUT ({settings.idle_timeout_ms} ms)."
        )
    return settings


def resolve_pool_settings(
    toml: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    toml_path: Path | None = None,
) -> ResolvedPoolSettings:
    """Merge the layers and validate the result; raise :class:`ConfigError` on bad values."""
    env = os.environ if environ is None else environ
    toml = toml or {}
    values = PoolSettings().model_dump()
    sources = dict.fromkeys(values, "runbook default")

    environment = env.get("PGDR_ENV") or toml.get("env")
    if environment:
        environment = str(environment).strip().lower()
        if environment not in POOL_PROFILES:
            names = ", ".join(POOL_PROFILES)
            raise ConfigError(f"PGDR_ENV must be one of {names}, not {environment!r}.")
        values.update(POOL_PROFILES[environment])
        sources.update(dict.fromkeys(values, f"profile {environment}"))

    pool_table = toml.get("pool", {})
    if not isinstance(pool_table, Mapping):
        raise ConfigError("The [pool] entry of pgdr.toml must be a table.")
    file_label = f"file {toml_path}" if toml_path else "pgdr.toml"
    for field, (variable, key) in POOL_VARIABLES.items():
        if key in pool_table:
            values[field] = _parse_int(pool_table[key], f"pool.{key} in pgdr.toml")
            sources[field] = file_label
        if variable in env:
            values[field] = _parse_int(env[variable], variable)
            sources[field] = f"env {variable}"
    return ResolvedPoolSettings(_validate(values), sources, environment)


def load_pool_settings(settings: PgdrSettings) -> ResolvedPoolSettings:
    """The effective pool settings: ``pgdr.toml`` (if any) and the environment, validated."""
    toml, path = load_toml(settings)
    return resolve_pool_settings(toml, toml_path=path)
