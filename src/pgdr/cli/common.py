"""What every command shares: settings, the target database and the --json option."""

from __future__ import annotations

from typing import Annotated

import typer

from pgdr.cluster import resolve_target
from pgdr.config import (
    PgdrSettings,
    ResolvedPoolSettings,
    Target,
    load_pool_settings,
    load_settings,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]


def settings() -> PgdrSettings:
    return load_settings()


def pool_settings(s: PgdrSettings | None = None) -> ResolvedPoolSettings:
    return load_pool_settings(s or settings())


def target(s: PgdrSettings | None = None) -> Target:
    return resolve_target(s or settings())
