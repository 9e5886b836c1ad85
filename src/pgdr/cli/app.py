"""The root ``pgdr`` command: assembles the sub-apps and maps errors to exit codes.

Exit codes (docs/cli.md): 0 ok; 1 a check failed or the database is unhealthy; 2 bad usage,
configuration, or an unconfirmed destructive action; 3 the work could not be done.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NamedTuple, NoReturn

import typer

from pgdr import __version__
from pgdr.core import log
from pgdr.core.errors import PgdrError
from pgdr.core.memory import keep_freed_memory
from pgdr.core.output import err_console, markup


class Entry(NamedTuple):
    """One top-level name: a sub-app (``group``) or a single command, in ``pgdr.cli.MODULE``."""

    module: str
    attr: str
    group: bool


def _group(module: str) -> Entry:
    return Entry(module, "app", True)


def _command(module: str, attr: str) -> Entry:
    return Entry(module, attr, False)


# Every top-level command, in the order ``pgdr --help`` lists them. Modules are imported only
# when their command runs (or for the full help): a command starts without importing the
# packages of the 30 others (FastAPI, the agent, the drills...), which halves its start-up.
COMMANDS: dict[str, Entry] = {
    # Getting started and the database itself
    "demo": _command("demo", "demo"),
    "db": _group("db"),
    "cluster": _group("cluster"),
    "health": _command("pool", "health"),
    "pool": _group("pool"),
    "sample": _group("sample"),
    "profile": _group("profile"),
    # Backups, WAL and recovery
    "backup": _group("backup"),
    "dump": _group("dump"),
    "restore": _command("restore", "restore"),
    "cleanup": _command("cluster", "cleanup"),
    "wal": _group("wal"),
    "mark": _command("mark", "mark"),
    "repo": _group("repo"),
    "prune": _command("repo", "prune"),
    "key": _group("key"),
    "recover": _group("recover"),
    "undelete": _command("logical", "undelete"),
    "restore-table": _command("logical", "restore_table"),
    "export": _command("logical", "export"),
    "audit": _group("audit"),
    # Integrity, incidents, monitoring and drills
    "check": _group("check"),
    "inventory": _group("inventory"),
    "readonly": _group("readonly"),
    "incident": _group("incident"),
    "monitor": _group("monitor"),
    "serve": _command("monitor", "serve"),
    "drill": _group("drill"),
    "agent": _group("agent"),
    "status": _command("agent", "status"),
    # Embeddings
    "reembed": _group("reembed"),
    "vector": _group("vector"),
}
# Options of the root callback that take a value (skipped when looking for the command name).
_ROOT_VALUE_OPTIONS = ("--log-level", "--log-file")

app = typer.Typer(
    name="pgdr",
    help="Backups, point-in-time recovery, integrity checks and drills for PostgreSQL + pgvector.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def root(
    log_level: Annotated[
        str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO).")
    ] = "INFO",
    log_file: Annotated[
        Path | None,
        typer.Option("--log-file", help="Also append log records to this file (mode 0600)."),
    ] = None,
) -> None:
    """Backups, point-in-time recovery, integrity checks and drills for PostgreSQL + pgvector.

    Long-running commands log through Python logging: rich on a terminal, plain lines
    otherwise, JSON lines with PGDR_LOG_FORMAT=json.
    """
    log.configure(log_level, log_file)


@app.command()
def version() -> None:
    """Print pgdr's version."""
    print(__version__)


def main() -> None:
    """Entry point: run the CLI, turning anticipated failures into one sentence and an exit code.

    typer itself reports usage errors (exit 2); everything pgdr anticipates is a PgdrError, and a
    psycopg error that escapes a command is translated into one (pgdr.core.connect.translate).
    """
    keep_freed_memory()
    try:
        build_app(command_name(sys.argv[1:]))()
    except PgdrError as exc:
        fail(exc)
    except Exception as exc:
        fail(_translated(exc))
    except KeyboardInterrupt:
        err_console.print("Interrupted.")
        sys.exit(130)


def command_name(args: Sequence[str]) -> str | None:
    """The top-level command named in ``args`` (after the root options), if any."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _ROOT_VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def build_app(only: str | None = None) -> typer.Typer:
    """The ``pgdr`` app with command ``only`` registered, or every command when it is unknown.

    An unknown or missing name registers everything, so that ``pgdr --help`` lists all commands
    and a misspelt one gets typer's usage error with the full list.
    """
    if only == "version":
        return app
    names = [only] if only in COMMANDS else list(COMMANDS)
    for name in names:
        if name not in _registered:
            _register(name, COMMANDS[name])
    return app


_registered: set[str] = set()


def _register(name: str, entry: Entry) -> None:
    target: Any = getattr(importlib.import_module(f"pgdr.cli.{entry.module}"), entry.attr)
    if entry.group:
        app.add_typer(target, name=name)
    else:
        app.command(name)(target)
    _registered.add(name)


def _translated(exc: Exception) -> PgdrError:
    """A psycopg error as pgdr's one sentence; anything else raised again as it is.

    psycopg is not imported here: a command that never talks to a database (a restore of a
    base backup) starts without it, a third of a cold start. A psycopg error can only come from
    a command that loaded psycopg, and then pgdr.core.connect costs nothing more to load.
    """
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(exc, psycopg.Error):
        raise exc
    from pgdr.core.connect import translate  # noqa: PLC0415

    return translate(exc)


def fail(exc: PgdrError) -> NoReturn:
    """Print the error's one sentence (escaped: it may quote user text) and exit with its code."""
    err_console.print(markup("[red]error:[/] {}", exc.message), highlight=False, soft_wrap=True)
    sys.exit(int(exc.exit_code))
