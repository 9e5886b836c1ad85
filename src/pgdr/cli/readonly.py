"""``pgdr readonly``: stop writes during an incident, and allow them again."""

from __future__ import annotations

from typing import Annotated

import typer

from pgdr.cli.common import JsonOption, settings
from pgdr.cli.database import pool_settings, target
from pgdr.core.errors import CheckFailed
from pgdr.core.output import console, emit, escape, key_value_table
from pgdr.incident import ReadOnlyState, read_only_status, set_read_only
from pgdr.incident.readonly import Scope
from pgdr.pool import connect

app = typer.Typer(help="Emergency read-only mode (runbook Scenario 3).", no_args_is_help=True)

ScopeOption = Annotated[Scope, typer.Option(help="One database, or the whole server.")]


def _show(state: ReadOnlyState, as_json: bool) -> None:
    emit(
        state.as_dict(),
        as_json,
        lambda: console.print(key_value_table("Read-only mode", list(state.as_dict().items()))),
    )


def _switch(enabled: bool, scope: Scope, terminate: bool, as_json: bool) -> None:
    s = settings()
    with connect(target(s).conninfo, pool_settings(s).settings, autocommit=True) as conn:
        state = set_read_only(conn, enabled, scope, terminate)
    _show(state, as_json)
    if not as_json:
        console.print(escape(state.message), highlight=False)
    if not enabled and state.effective and not state.kept_read_only:
        raise CheckFailed(state.message)


@app.command()
def on(
    scope: ScopeOption = Scope.DATABASE,
    terminate: Annotated[
        bool, typer.Option("--terminate", help="End other sessions so they reconnect read-only.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Make new transactions read-only (mass deletion in progress, corruption spreading)."""
    _switch(True, scope, terminate, as_json)


@app.command()
def off(scope: ScopeOption = Scope.DATABASE, as_json: JsonOption = False) -> None:
    """Allow writes again."""
    _switch(False, scope, False, as_json)


@app.command()
def status(as_json: JsonOption = False) -> None:
    """Show whether read-only mode is on; exit 1 when it is."""
    s = settings()
    with connect(target(s).conninfo, pool_settings(s).settings) as conn:
        state = read_only_status(conn)
    _show(state, as_json)
    if state.effective:
        raise typer.Exit(1)
