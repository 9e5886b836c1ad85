"""``pgdr key``: the master key in force, and rotating it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pgdr.backup import load_repositories, open_repository
from pgdr.backup.keys import rotate_master_key
from pgdr.cli.common import JsonOption, settings
from pgdr.core.output import console, emit, key_value_table, styled
from pgdr.crypto import load_master_key

app = typer.Typer(help="The master encryption key.", no_args_is_help=True)


@app.command()
def show(as_json: JsonOption = False) -> None:
    """Show which master key is in force (its id and where it comes from, never the key)."""
    key, note = load_master_key(settings().home)
    data = {"key_id": key.key_id, "origin": key.origin, "generated_now": note is not None}

    def render() -> None:
        if note:
            console.print(styled(note, "yellow"))
        console.print(key_value_table("Master key", list(data.items())))

    emit(data, as_json, render)


@app.command()
def rotate(
    new_key_file: Annotated[
        Path | None,
        typer.Option(
            "--new-key-file",
            help="File holding the new base64 key (default: generate one in PGDR_HOME/keys).",
        ),
    ] = None,
    repo_names: Annotated[
        list[str] | None,
        typer.Option("--repo", help="Only these repositories (default: every configured one)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-wrap every backup's data key under a new master key (no data is rewritten)."""
    s = settings()
    names = repo_names or sorted(load_repositories(s))
    repos = [open_repository(s, name) for name in names]
    report = rotate_master_key(repos, s.home, new_key_file)

    def render() -> None:
        total = sum(report.rewrapped.values())
        console.print(
            f"Rotated from key {report.old_key_id} to {report.new_key_id}: re-wrapped {total} "
            f"data key(s) in {', '.join(names)}."
        )
        console.print(report.note)

    emit(report.as_dict(), as_json, render)
