"""``pgdr profile``: show or validate an application profile; ``init`` discovers one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from pgdr.cli.common import JsonOption, settings
from pgdr.cli.database import target
from pgdr.core.output import console, emit, escape, styled
from pgdr.integrity.discover import write_discovered
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


@app.command()
def init(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the TOML here (default: print it).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Discover a profile from the database's catalog and write it as TOML to edit."""
    found = write_discovered(target().conninfo, out, force)

    def render() -> None:
        if out is None:
            console.print(escape(found.toml), highlight=False, markup=False)
            return
        for note in found.notes:
            console.print(styled(f"note: {note}", "dim"), highlight=False)
        console.print(
            f"Wrote profile {escape(found.profile.name)} to {escape(str(out))}; edit it, then "
            f"use it with --profile {escape(str(out))} or PGDR_PROFILE.",
            highlight=False,
        )

    emit(
        {
            "profile": found.profile.model_dump(by_alias=True),
            "notes": found.notes,
            "path": str(out) if out else None,
        },
        as_json,
        render,
    )
