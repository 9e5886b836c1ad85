"""``pgdr profile``: show or validate an application profile."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from pgdr.cli.common import JsonOption, settings
from pgdr.core.output import console, emit
from pgdr.profile import load_profile

app = typer.Typer(
    help="Application profiles (critical tables, relations, embedding sources).",
    no_args_is_help=True,
)


@app.command()
def show(
    name: Annotated[
        str | None, typer.Argument(help="Built-in name or TOML path (default: PGDR_PROFILE).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Validate a profile and print it."""
    profile = load_profile(name or settings().profile)

    def render() -> None:
        console.print(Text.assemble((profile.name, "bold"), f": {profile.description}"))
        console.print("tables: " + ", ".join(t.name for t in profile.tables))
        for rel in profile.relations:
            console.print(f"relation: {rel.child}({', '.join(rel.child_columns)}) -> {rel.parent}")
        for src in profile.embeddings:
            console.print(
                f"embeddings: {src.name}: {src.table}.{src.vector} <- {src.text} "
                f"({src.dimension} dims)"
            )
        for rule in profile.rules:
            console.print(f"rule: {rule.name} [{rule.severity}] on {rule.table}")

    emit(profile.model_dump(by_alias=True), as_json, render)
