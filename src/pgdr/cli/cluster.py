"""``pgdr cluster``: the clusters restores made (list, start, stop, url, rm); ``pgdr cleanup``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pgdr.cli.common import JsonOption, confirmed, render_settings, settings
from pgdr.cluster.manager import named_cluster
from pgdr.cluster.registry import list_clusters, remove_cluster
from pgdr.core.errors import CheckFailed, ConfigError
from pgdr.core.output import console, emit, err_console
from pgdr.restore.staging import cleanup as cleanup_restores
from pgdr.restore.start import start_as_primary

app = typer.Typer(
    help="The local clusters pgdr runs: the embedded default and those restores started.",
    no_args_is_help=True,
)
NameArgument = Annotated[str, typer.Argument(help="The cluster's name (see `pgdr cluster list`).")]


@app.command("list")
def list_(as_json: JsonOption = False) -> None:
    """Every local cluster: name, running, port, version, data directory."""
    entries = list_clusters(settings())

    def render() -> None:
        if not entries:
            console.print("There are no local clusters.")
            return
        table = Table(title="Local clusters", title_justify="left")
        for column in ("name", "state", "port", "version", "data directory", "made by"):
            table.add_column(column)
        for e in entries:
            st = e.status
            table.add_row(
                escape(st.name),
                Text("running", style="green") if st.running else "stopped",
                str(st.port or ""),
                st.version or "",
                escape(st.data_dir),
                "restore" if e.adopted else "pgdr db/initdb",
            )
        console.print(table)

    emit({"clusters": [e.as_dict() for e in entries]}, as_json, render)


@app.command()
def start(
    name: NameArgument,
    port: Annotated[
        int | None, typer.Option(help="Start on this port from now on.", min=1, max=65535)
    ] = None,
    as_primary: Annotated[
        bool,
        typer.Option(
            "--as-primary",
            help="Start a restored copy as the new primary, from now on: its own configuration "
            "decides WAL archiving and synchronous standbys (a copy runs with archive_mode=off "
            "and no synchronous standby). The cluster must be stopped.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Start a cluster (with pgdr's port and socket; its own configuration otherwise)."""
    cluster = named_cluster(settings(), name)
    if port is not None and port != cluster.port:
        if cluster.status().running:
            raise ConfigError(f"Cluster {name!r} is running on port {cluster.port}; stop it first.")
        cluster.set_port(port)
    started = start_as_primary(cluster) if as_primary else {"notes": cluster.start()}
    data = cluster.status().as_dict() | {"url": cluster.conninfo()} | started

    def render() -> None:
        for note in data["notes"]:
            err_console.print(f"[yellow]{escape(note)}[/]")
        console.print(f"Started cluster {escape(name)} on port {cluster.port}.")
        render_settings(data)
        console.print(f"URL: {escape(cluster.conninfo())}")

    emit(data, as_json, render)


@app.command()
def stop(name: NameArgument, as_json: JsonOption = False) -> None:
    """Stop a cluster (fast shutdown)."""
    stopped = named_cluster(settings(), name).stop()
    emit(
        {"name": name, "stopped": stopped},
        as_json,
        lambda: console.print(
            "Stopped." if stopped else f"Cluster {escape(name)} was not running."
        ),
    )


@app.command()
def url(name: NameArgument) -> None:
    """Print a cluster's connection URL (unix socket, no password needed)."""
    cluster = named_cluster(settings(), name)
    if not cluster.exists:
        raise CheckFailed(f"Cluster {name!r} has no data directory at {cluster.data_dir}.")
    print(cluster.checked_conninfo())


@app.command()
def rm(
    name: NameArgument,
    with_data: Annotated[
        bool,
        typer.Option(
            "--with-data", help="Also delete a data directory kept outside the cluster's own."
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Stop a cluster and delete it (its data directory too when it lives inside it)."""
    s = settings()
    cluster = named_cluster(s, name)
    if not yes and not confirmed(f"Delete cluster {name} ({cluster.directory})?"):
        raise ConfigError("Not confirmed: nothing was deleted (pass --yes to skip the question).")
    removed = remove_cluster(s, name, with_data)

    def render() -> None:
        console.print(f"Removed {escape(', '.join(removed))}.")

    emit({"name": name, "removed": removed}, as_json, render)


def cleanup(
    places: Annotated[
        list[Path] | None,
        typer.Option("--in", help="Also look in this directory for staging (repeatable)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Remove what killed restores left: staging directories of dead processes, half-made
    clusters. Never touches a running restore or a finished one."""
    report = cleanup_restores(settings(), places or [])

    def render() -> None:
        for path in report.removed:
            console.print(f"Removed {escape(path)}")
        if not report.removed:
            console.print("Nothing left over by a dead restore.")
        for pid in report.running:
            console.print(f"A restore is still running (process {pid}); left alone.")

    emit(report.as_dict(), as_json, render)
