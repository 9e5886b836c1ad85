"""What every command shares: settings, the --json and --workers options.

The target database and the pool settings are :mod:`pgdr.cli.database`'s: they load psycopg
and pydantic models that a command which never connects (a restore) starts faster without.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from pgdr.config import PgdrSettings, load_settings
from pgdr.core.output import console, escape

JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
WorkersOption = Annotated[
    int | None, typer.Option("--workers", min=1, help="Parallel workers (default: cores).")
]


def settings() -> PgdrSettings:
    return load_settings()


def confirmed(question: str) -> bool:
    """Whether the operator answers yes to ``question`` (asked on stderr, default no).

    Only a terminal is asked: without one on stdin there is nobody to answer (a piped "y" is
    no confirmation; --yes is), and the end of input (Ctrl-D) is no answer. Both are a no,
    which the caller turns into its documented refusal, never click's "Aborted." (exit 1).
    Ctrl-C stays an interruption (exit 130).
    """
    if not sys.stdin.isatty():
        return False
    typer.echo(f"{question} [y/N]: ", nl=False, err=True)
    answer = sys.stdin.readline()
    if not answer:
        typer.echo(err=True)  # the end of input left the prompt's line open
    return answer.strip().lower() in ("y", "yes")


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


def render_settings(started: dict[str, Any]) -> None:
    """What ``--as-primary`` started with: each setting that kept a copy a copy, and where its
    value comes from now."""
    for setting, found in started.get("settings", {}).items():
        console.print(
            f"  {setting} = {escape(repr(found['value']))} (from {escape(found['source'])})"
        )
