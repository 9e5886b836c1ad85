"""Settings: where pgdr reads its configuration from and how it validates it.

Owns the runbook's pool variables and their four environment profiles
(:mod:`pgdr.config.pool_settings`), the ``PGDR_*`` variables, the optional ``pgdr.toml`` file,
and the target database the settings name (:mod:`pgdr.config.target`: ``DATABASE_URL``, the
libpq ``PG*`` variables); the embedded default is ``pgdr.cluster.resolve_target``.

Only the settings are re-exported here: importing a module of this package loads this file,
and the pool settings' models and psycopg (the target's connection strings) would add a third
to the start of every command that needs neither.
"""

from pgdr.config.settings import PgdrSettings, load_settings, load_toml

__all__ = ["PgdrSettings", "load_settings", "load_toml"]
