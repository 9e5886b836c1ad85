"""What every command shares: settings, the target database, and human/JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from pgdr.config import (
    PgdrSettings,
    ResolvedPoolSettings,
    Target,
    load_settings,
    load_toml,
    resolve_pool_settings,
    resolve_target,
)

console = Console()
err_console = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]


def settings() -> PgdrSettings:
    return load_settings()


def pool_settings(s: PgdrSettings | None = None) -> ResolvedPoolSettings:
    s = s or settings()
    toml, path = load_toml(s)
    return resolve_pool_settings(toml, toml_path=path)


def target(s: PgdrSettings | None = None) -> Target:
    return resolve_target(s or settings())


def emit(data: Any, as_json: bool, render: Callable[[], None]) -> None:
    """Print ``data`` as JSON, or call ``render`` for the human form."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str, sort_keys=True) + "\n")
    else:
        render()


def key_value_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, "" if value is None else str(value))
    return table


@contextmanager
def progress_bar(
    description: str, total: int | None, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on a terminal (stderr); a no-op for JSON output or pipes."""
    if not enabled or not err_console.is_terminal:
        yield lambda _n: None
        return
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
