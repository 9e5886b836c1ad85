"""``pgdr db``: the embedded default database (start, stop, status, url, destroy)."""

from __future__ import annotations

from typing import Annotated

import typer

from pgdr.cli.common import JsonOption, confirmed, settings
from pgdr.cluster import LocalCluster, default_cluster
from pgdr.cluster.registry import prepare_default
from pgdr.core.errors import CheckFailed, ConfigError
from pgdr.core.output import console, emit, err_console, key_value_table, styled

app = typer.Typer(
    help="Manage the embedded default PostgreSQL that pgdr runs itself.", no_args_is_help=True
)


def _cluster() -> LocalCluster:
    return default_cluster(settings())


@app.command()
def start(
    port: Annotated[
        int | None, typer.Option(help="TCP port on 127.0.0.1 (default: a free one).")
    ] = None,
    pg_version: Annotated[
        int | None, typer.Option(help="PostgreSQL major version to create it with.")
    ] = None,
    no_checksums: Annotated[
        bool, typer.Option("--no-checksums", help="Create without data checksums.")
    ] = False,
    new: Annotated[
        bool,
        typer.Option("--new", help="Create an empty database even where pgdr created one before."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create the embedded database on first use, then start it.

    Where pgdr created one before and its data is gone, it refuses and names the restore
    command instead (unless --new); a data directory restored into its place is taken over.
    """
    cluster = _cluster()
    created = prepare_default(cluster, port, pg_version, not no_checksums, new)
    if not created and port is not None and port != cluster.port:
        if cluster.status().running:
            raise ConfigError(
                f"The embedded database is already running on port {cluster.port}; stop it first."
            )
        cluster.set_port(port)
    running = not created and cluster.status().running
    notes = cluster.start()
    status = cluster.status()
    data = status.as_dict() | {
        "created": created,
        "already_running": running,
        "url": cluster.conninfo(),
        "notes": notes,
    }

    def render() -> None:
        for note in notes:
            err_console.print(styled(note, "yellow"))
        verb = "Created and started" if created else "Already running:" if running else "Started"
        console.print(f"{verb} PostgreSQL {status.version} on port {status.port}.")
        console.print(f"URL: {cluster.conninfo()}")

    emit(data, as_json, render)


@app.command()
def stop(as_json: JsonOption = False) -> None:
    """Stop the embedded database (fast shutdown)."""
    cluster = _cluster()
    stopped = cluster.stop() if cluster.exists else False
    emit(
        {"stopped": stopped},
        as_json,
        lambda: console.print("Stopped." if stopped else "The embedded database was not running."),
    )


@app.command()
def status(as_json: JsonOption = False) -> None:
    """Show whether the embedded database exists and runs; exit 1 when it is not running."""
    cluster = _cluster()
    st = cluster.status()

    def render() -> None:
        console.print(key_value_table("Embedded database", list(st.as_dict().items())))

    emit(st.as_dict(), as_json, render)
    if not st.running:
        raise typer.Exit(1)


@app.command()
def url(
    tcp: Annotated[bool, typer.Option(help="A 127.0.0.1 URL instead of the unix socket.")] = False,
    with_password: Annotated[bool, typer.Option(help="Include the password (TCP only).")] = False,
    database: Annotated[str, typer.Option(help="Database name.")] = "postgres",
) -> None:
    """Print the connection URL of the embedded database."""
    cluster = _cluster()
    if not cluster.exists:
        raise CheckFailed("The embedded database does not exist yet; run `pgdr db start`.")
    if with_password and not tcp:
        raise ConfigError("--with-password goes with --tcp; socket connections need no password.")
    print(cluster.tcp_url(database, with_password) if tcp else cluster.checked_conninfo(database))


@app.command()
def destroy(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Stop the embedded database and delete it with all its data."""
    cluster = _cluster()
    if not cluster.directory.exists():
        console.print("There is no embedded database to destroy.")
        return
    if not yes and not confirmed(f"Delete {cluster.directory} and every row in it?"):
        raise ConfigError("Not confirmed: nothing was deleted (pass --yes to skip the question).")
    cluster.destroy()
    console.print(f"Destroyed {cluster.directory}.")
