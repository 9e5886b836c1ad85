"""Settings: where pgdr reads its configuration from and how it validates it.

Owns the runbook's pool variables and their four environment profiles, the ``PGDR_*`` variables,
the optional ``pgdr.toml`` file, and the target database the settings name (``DATABASE_URL``, the
libpq ``PG*`` variables); the embedded default is ``pgdr.cluster.resolve_target``.
"""

from pgdr.config.pool_settings import (
    POOL_PROFILES,
    PoolSettings,
    ResolvedPoolSettings,
    load_pool_settings,
    resolve_pool_settings,
)
from pgdr.config.settings import PgdrSettings, load_settings, load_toml
from pgdr.config.target import Target, configured_target

__all__ = [
    "POOL_PROFILES",
    "PgdrSettings",
    "PoolSettings",
    "ResolvedPoolSettings",
    "Target",
    "configured_target",
    "load_pool_settings",
    "load_settings",
    "load_toml",
    "resolve_pool_settings",
]
