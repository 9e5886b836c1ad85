"""``pgdr recover rows|tables``: put back rows, or repair whole tables, from a recovered copy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pgdr.cli.common import JsonOption
from pgdr.cli.database import target
from pgdr.core.errors import ConfigError
from pgdr.core.output import console, emit
from pgdr.restore.rows import recover_rows, repair_tables

app = typer.Typer(help="Recover chosen data from a restored copy into the target database.")


def source_url(from_env: str | None, from_file: Path | None) -> str:
    """The source connection string, from an environment variable or a file (never argv)."""
    if (from_env is None) == (from_file is None):
        raise ConfigError("Give exactly one of --from-env VAR or --from-file PATH.")
    if from_env is not None:
        url = os.environ.get(from_env, "").strip()
        if not url:
            raise ConfigError(f"Environment variable {from_env} is not set or empty.")
        return url
    assert from_file is not None
    try:
        url = from_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{from_file} cannot be read: {exc.strerror}.") from exc
    if not url:
        raise ConfigError(f"{from_file} is empty.")
    return url


FromEnvOption = Annotated[
    str | None,
    typer.Option(
        "--from-env", metavar="VAR", help="Environment variable holding the source's URL."
    ),
]
FromFileOption = Annotated[
    Path | None, typer.Option("--from-file", help="File holding the source's URL.")
]


@app.command()
def rows(
    table: Annotated[str, typer.Option("--table", help="The table whose rows to put back.")],
    key: Annotated[
        list[str], typer.Option("--key", help="Key value of a row to put back (repeatable).")
    ],
    from_env: FromEnvOption = None,
    from_file: FromFileOption = None,
    key_column: Annotated[
        str | None, typer.Option("--key-column", help="Column of --key (default: primary key).")
    ] = None,
    with_children: Annotated[
        bool,
        typer.Option(
            "--with-children", help="Also every row that references them, through all FKs."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Copy rows from a restored copy (the source) into the target database (DATABASE_URL).

    Parents first, in one transaction, ON CONFLICT DO NOTHING: rows that still exist are kept.
    Works while the target is in read-only mode.
    """
    url = source_url(from_env, from_file)
    result = recover_rows(
        url, target().conninfo, table, key, key_column=key_column, with_children=with_children
    )

    def render() -> None:
        out = Table(title=f"Rows recovered into the target ({table})", title_justify="left")
        for column in ("table", "in the source", "inserted", "already present"):
            out.add_column(column, justify="left" if column == "table" else "right")
        for t in result.tables:
            out.add_row(t.table, f"{t.found:,}", f"{t.inserted:,}", f"{t.already_present:,}")
        console.print(out)
        console.print(
            f"{result.inserted:,} of {result.found:,} row(s) inserted in "
            f"{result.duration_s:.2f} s.",
            highlight=False,
        )

    emit(result.as_dict(), as_json, render)


@app.command()
def tables(
    table: Annotated[
        list[str], typer.Option("--table", help="A damaged table to repair (repeatable).")
    ],
    from_env: FromEnvOption = None,
    from_file: FromFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Repair tables of the target (DATABASE_URL) from a copy restored to before the damage.

    Rows of the copy missing from the target are inserted, differing rows are updated (by
    primary key), rows only in the target (written later) are kept; one transaction.
    """
    url = source_url(from_env, from_file)
    repaired = repair_tables(url, target().conninfo, table)
    data = {
        "tables": [
            {"table": t.table, "rows_in_copy": t.found, "changed": t.inserted} for t in repaired
        ]
    }

    def render() -> None:
        out = Table(title="Tables repaired from the copy", title_justify="left")
        for column in ("table", "rows in the copy", "rows put back or corrected"):
            out.add_column(column, justify="left" if column == "table" else "right")
        for t in repaired:
            out.add_row(t.table, f"{t.found:,}", f"{t.inserted:,}")
        console.print(out)

    emit(data, as_json, render)
