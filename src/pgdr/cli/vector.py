"""``pgdr vector``: the pgvector extension itself (relocating it in place)."""

from __future__ import annotations

from typing import Annotated

import typer

from pgdr.cli.common import JsonOption
from pgdr.cli.database import target
from pgdr.core.output import console, emit, err_console, styled
from pgdr.embeddings.relocate import relocate_vector
from pgdr.pool import connect

app = typer.Typer(help="The pgvector extension.", no_args_is_help=True)


@app.command()
def relocate(
    schema: Annotated[str, typer.Option(help="Schema to move the extension to.")] = "extensions",
    extension: Annotated[str, typer.Option(help="Extension name.")] = "vector",
    as_json: JsonOption = False,
) -> None:
    """Move the vector extension to another schema in place: no column dropped, no vector lost."""
    with connect(target().conninfo, autocommit=True) as conn:
        report = relocate_vector(conn, schema, extension)

    def render() -> None:
        if report.moved:
            console.print(
                f"Moved {report.extension} {report.version} from {report.from_schema!r} to "
                f"{report.to_schema!r}; {report.vector_columns} vector columns kept their data."
            )
        else:
            console.print(f"{report.extension} is already in schema {report.to_schema!r}.")
        if not report.search_path_ok:
            err_console.print(
                styled(
                    f"The database search_path ({report.search_path}) lacks "
                    f"{report.to_schema!r}: unqualified 'vector' will not resolve; run "
                    f"ALTER DATABASE ... SET search_path = ..., {report.to_schema}.",
                    "yellow",
                )
            )

    emit(report.as_dict(), as_json, render)
