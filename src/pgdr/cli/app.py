"""The root ``pgdr`` command: assembles the sub-apps and maps errors to exit codes.

Exit codes (docs/cli.md): 0 ok; 1 a check failed or the database is unhealthy; 2 bad usage,
configuration, or an unconfirmed destructive action; 3 the work could not be done.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import psycopg
import typer

from pgdr import __version__
from pgdr.cli import (
    agent,
    backup,
    check,
    cluster,
    db,
    demo,
    drill,
    dump,
    incident,
    inventory,
    key,
    logical,
    mark,
    monitor,
    pool,
    profile,
    readonly,
    recover,
    reembed,
    repo,
    restore,
    sample,
    vector,
    wal,
    walfind,
)
from pgdr.core import log
from pgdr.core.connect import translate
from pgdr.core.errors import PgdrError
from pgdr.core.output import err_console, markup

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


# Getting started and the database itself
app.command()(demo.demo)
app.add_typer(db.app, name="db")
app.add_typer(cluster.app, name="cluster")
app.command()(pool.health)
app.add_typer(pool.app, name="pool")
app.add_typer(sample.app, name="sample")
app.add_typer(profile.app, name="profile")
# Backups, WAL and recovery
app.add_typer(backup.app, name="backup")
app.add_typer(dump.app, name="dump")
app.command()(restore.restore)
app.command()(cluster.cleanup)
app.add_typer(wal.app, name="wal")
wal.app.command("find")(walfind.find)
app.command()(mark.mark)
app.add_typer(repo.app, name="repo")
app.command()(repo.prune)
app.add_typer(key.app, name="key")
app.add_typer(recover.app, name="recover")
app.command()(logical.undelete)
app.command("restore-table")(logical.restore_table)
app.command()(logical.export)
# Integrity, incidents, monitoring and drills
app.add_typer(check.app, name="check")
app.add_typer(inventory.app, name="inventory")
app.add_typer(readonly.app, name="readonly")
app.add_typer(incident.app, name="incident")
app.add_typer(monitor.app, name="monitor")
app.command()(monitor.serve)
app.add_typer(drill.app, name="drill")
app.add_typer(agent.app, name="agent")
app.command()(agent.status)
# Embeddings
app.add_typer(reembed.app, name="reembed")
app.add_typer(vector.app, name="vector")


@app.command()
def version() -> None:
    """Print pgdr's version."""
    print(__version__)


def main() -> None:
    """Entry point: run the CLI, turning anticipated failures into one sentence and an exit code.

    typer itself reports usage errors (exit 2); everything pgdr anticipates is a PgdrError, and a
    psycopg error that escapes a command is translated into one (pgdr.core.connect.translate).
    """
    try:
        app()
    except PgdrError as exc:
        fail(exc)
    except psycopg.Error as exc:
        fail(translate(exc))
    except KeyboardInterrupt:
        err_console.print("Interrupted.")
        sys.exit(130)


def fail(exc: PgdrError) -> NoReturn:
    """Print the error's one sentence (escaped: it may quote user text) and exit with its code."""
    err_console.print(markup("[red]error:[/] {}", exc.message), highlight=False, soft_wrap=True)
    sys.exit(int(exc.exit_code))
