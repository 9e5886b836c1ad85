"""``pgdr key``: the master key in force, and rotating it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pgdr.backup import load_repositories, open_repository
from pgdr.cli.common import JsonOption, settings
from pgdr.core.output import console, emit, key_value_table, markup
from pgdr.wal.rotation import describe_master_key, rotate_master_key

app = typer.Typer(help="The master encryption key.", no_args_is_help=True)


@app.command()
def show(
    repo_name: Annotated[
        str | None, typer.Option("--repo", help="Repository to compare with (default primary).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show which master key is in force (its id and origin, never the key); creates none."""
    data = describe_master_key(open_repository(settings(), repo_name))

    def render() -> None:
        rows = [(k, ", ".join(v) if isinstance(v, list) else v) for k, v in data.items()]
        console.print(key_value_table("Master key", rows))

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
    """Re-wrap every backup's, dump's and export's data key and the WAL keyring under a new
    master key (no data is rewritten)."""
    s = settings()
    names = repo_names or sorted(load_repositories(s))
    repos = [open_repository(s, name) for name in names]
    report = rotate_master_key(repos, s.home, new_key_file)

    def render() -> None:
        total = sum(report.rewrapped.values())
        dumps = sum(report.rewrapped_dumps.values())
        wal = sum(1 for v in report.wal_keyring.values() if v != "absent")
        console.print(
            f"Rotated from key {report.old_key_id} to {report.new_key_id}: re-wrapped the data "
            f"keys of {total} backup(s) and {dumps} dump(s) or export(s), and {wal} WAL "
            f"keyring(s) in {', '.join(names)}."
        )
        for name, damaged in report.damaged.items():
            for line in damaged:
                console.print(markup("[red]not re-wrapped[/] ({}) {}", name, line))
        console.print(report.note)

    emit(report.as_dict(), as_json, render)
