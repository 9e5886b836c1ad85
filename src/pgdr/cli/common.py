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
WorkersOption = Annotated[
    int | None, typer.Option("--workers", min=1, help="Parallel workers (default: cores).")
]


def settings() -> PgdrSettings:
    return load_settings()


def pool_settings(s: PgdrSettings | None = None) -> ResolvedPoolSettings:
    return load_pool_settings(s or settings())


def target(s: PgdrSettings | None = None) -> Target:
    return resolve_target(s or settings())


def command_group(help: str) -> typer.Typer:
    """A group whose callback is itself the command run when no sub-command is named (it
    returns early, see :func:`subcommand_named`, when one is)."""
    return typer.Typer(help=help, invoke_without_command=True)


def subcommand_named(ctx: typer.Context) -> bool:
    return ctx.invoked_subcommand is not None


def window_text(start: object, end: object) -> str:
    """A recovery window as ``start .. end``: an end not proven (a gap after every usable
    backup, or nothing yet shows what the repository holds) is said to be unknown."""
    return f"{start} .. {'unknown (not proven: see `pgdr wal status`)' if end is None else end}"
