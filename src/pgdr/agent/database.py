"""One configured database made usable: its target, its repositories (namespaced) and records.

This is the resolver other commands can adopt for ``--db NAME``: ``DatabaseHandle.target()``
is what ``resolve_target`` gives for the single default database, and ``repository(name)``
opens a configured repository inside the database's namespace (``databases/<name>/`` for a
database declared in ``pgdr.toml``, the repository's root for the implicit ``default``).
Nothing here connects to the database or writes to a repository by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pgdr.backup.repository import RepoConfig, Repository, load_repositories
from pgdr.cluster.target import resolve_target
from pgdr.config.fleet import Database, load_fleet, resolve_database, select
from pgdr.config.settings import PgdrSettings
from pgdr.config.target import Target
from pgdr.core.errors import ConfigError
from pgdr.storage import open_store


def namespaced_url(url: str, namespace: str) -> str:
    """``url`` with ``namespace`` appended as a sub-path (paths and ``s3://`` alike)."""
    if not namespace:
        return url
    return f"{url.rstrip('/')}/{namespace}"


@dataclass
class DatabaseHandle:
    """A database of the fleet with the settings in force."""

    db: Database
    settings: PgdrSettings

    @property
    def name(self) -> str:
        return self.db.name

    @property
    def records(self) -> Path:
        return self.db.records_dir(self.settings)

    def target(self) -> Target:
        """The database's connection (may raise when the embedded default is not running)."""
        url = self.db.url()
        return resolve_target(self.settings, url=url)

    def repository_config(self, name: str) -> RepoConfig:
        repos = load_repositories(self.settings)
        if name not in repos:
            raise ConfigError(
                f"databases.{self.name}.repositories names {name!r}, which is not configured "
                f"(configured: {', '.join(sorted(repos))})."
            )
        base = repos[name]
        return RepoConfig(
            base.name,
            namespaced_url(base.url, self.db.namespace),
            base.options,
            base.retention,
            base.chunk_size,
            base.source,
        )

    def repository(self, name: str | None = None) -> Repository:
        """A repository of this database (default: its primary tier)."""
        config = self.repository_config(name or self.db.primary_repository)
        return Repository(config, open_store(config.url, config.options), self.settings)

    def secondaries(self) -> list[Repository]:
        return [self.repository(n) for n in self.db.secondary_repositories]


def database_handles(settings: PgdrSettings, name: str | None) -> list[DatabaseHandle]:
    """``--db NAME|all`` resolved against the fleet in force."""
    return [DatabaseHandle(db, settings) for db in select(load_fleet(settings), name)]


def database_handle(settings: PgdrSettings, name: str | None) -> DatabaseHandle:
    """``--db NAME`` for a command that works on exactly one database."""
    return DatabaseHandle(resolve_database(settings, name), settings)
