"""What the commands that talk to a database share: its target and the pool settings."""

from __future__ import annotations

from pgdr.cli.common import settings
from pgdr.cluster.target import resolve_target
from pgdr.config import PgdrSettings
from pgdr.config.pool_settings import ResolvedPoolSettings, load_pool_settings
from pgdr.config.target import Target


def pool_settings(s: PgdrSettings | None = None) -> ResolvedPoolSettings:
    return load_pool_settings(s or settings())


def target(s: PgdrSettings | None = None) -> Target:
    return resolve_target(s or settings())
