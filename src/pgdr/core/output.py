"""pgdr's one output layer: a report is data, rendered by a writer (human or JSON).

Invariants:
- user and database text (a backup label, a table name, an error message, profile text) never
  reaches rich as markup: the consoles have markup off, so a plain string prints as it is; pgdr's
  own colours are :func:`markup` templates whose fields are escaped, or :func:`styled` text;
- JSON goes to stdout as one document; datetimes are ISO 8601 (see :mod:`pgdr.core.time`);
- progress bars and notes go to stderr, and bars only on a terminal.

A writer is picked by name (:data:`WRITERS`); a new form of output (e.g. Nagios) is one more
:class:`Writer` subclass.
"""

from __future__ import annotations

import json
import string
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape as _rich_escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

# markup=False: a plain string is printed as it is, whatever brackets it holds. pgdr's own
# styling goes through Text objects (:func:`markup`, :func:`styled`), never through user text.
console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)


def escape(value: object) -> str:
    """``value`` as text the consoles print literally (``[/]`` stays ``[/]``).

    The consoles have markup off, so any plain string is already literal: this only turns
    ``value`` into text. (Inside a :func:`markup` template, fields are escaped for rich.)
    """
    return "" if value is None else str(value)


def markup(template: str, *values: object) -> Text:
    """pgdr's own markup ``template`` with ``{}`` fields filled by escaped ``values``.

    ``markup("[yellow]skipped:[/] {}", reason)`` styles the label, never the reason.
    """
    parts: list[str] = []
    index = 0
    for literal, field_name, spec, _conversion in string.Formatter().parse(template):
        parts.append(literal)
        if field_name is not None:
            parts.append(_rich_escape(format(values[index], spec or "")))
            index += 1
    return Text.from_markup("".join(parts), emoji=False)


def styled(text: object, style: str) -> Text:
    """``text`` shown literally in ``style``."""
    return Text(str(text), style=style)


def cell(value: object) -> Text:
    """A table cell holding ``value`` literally (None is an empty cell)."""
    return Text("" if value is None else str(value))


def say(message: object, *, style: str | None = None, err: bool = False) -> None:
    """Print user or database text literally, optionally in one style."""
    target = err_console if err else console
    target.print(Text(str(message), style=style or ""), highlight=False, soft_wrap=True)


def json_default(value: Any) -> Any:
    """What json cannot spell: ISO 8601 times, dataclasses as objects, the rest as text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=json_default, sort_keys=True)


class Writer:
    """Renders one report. Subclasses decide the form; ``render`` draws the human one."""

    name = "human"

    def write(self, data: Any, render: Callable[[], None]) -> None:
        render()


class JsonWriter(Writer):
    name = "json"

    def write(self, data: Any, render: Callable[[], None]) -> None:
        sys.stdout.write(to_json(data) + "\n")


WRITERS: dict[str, Writer] = {"human": Writer(), "json": JsonWriter()}


def emit(data: Any, as_json: bool, render: Callable[[], None]) -> None:
    """Print ``data`` as JSON, or call ``render`` for the human form."""
    WRITERS["json" if as_json else "human"].write(data, render)


def key_value_table(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    """A two-column table of ``key: value``; every value is shown literally."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(cell(key), cell(value))
    return table


def table(
    title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], **kwargs: Any
) -> Table:
    """A table whose cells are shown literally, whatever text they hold."""
    result = Table(title=title, title_justify="left", **kwargs)
    for column in columns:
        result.add_column(column)
    for row in rows:
        result.add_row(*(v if isinstance(v, Text) else cell(v) for v in row))
    return result


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
        task = progress.add_task(escape(description), total=total)
        yield lambda n: progress.advance(task, n)
