"""``pgdr audit install|remove|show``: the optional trigger trail of who changed what, each one
call into :mod:`pgdr.logical.audit`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from pgdr.cli.check import chosen_profile
from pgdr.cli.common import JsonOption
from pgdr.cli.database import target
from pgdr.core.output import console, emit, escape
from pgdr.logical import audit as trail
from pgdr.logical.audit import AuditStatus

app = typer.Typer(
    help="An optional trigger trail (pgdr_audit) of who updated, deleted or truncated what.",
    no_args_is_help=True,
)


@app.command()
def install(
    tables: Annotated[
        list[str] | None,
        typer.Option("--tables", help="A table to audit (repeatable; default: the profile's)."),
    ] = None,
    profile: Annotated[str | None, typer.Option(help="Profile naming the tables.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Install the pgdr_audit table and row triggers (idempotent)."""
    chosen = trail.audit_tables(chosen_profile(profile), tables)
    status = trail.install(target().conninfo, chosen)
    emit(status.as_dict(), as_json, lambda: _render(status))


@app.command()
def remove(
    force: Annotated[
        bool, typer.Option("--force", help="Also drop the pgdr_audit table and its rows.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Drop the triggers and function pgdr installed (the trail too with --force)."""
    status = trail.remove(target().conninfo, force=force)
    emit(status.as_dict(), as_json, lambda: _render(status))


@app.command()
def show(
    table: Annotated[str | None, typer.Option("--table", help="Only this table.")] = None,
    limit: Annotated[int, typer.Option(help="The newest N entries.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """What is audited and the newest entries of the trail (reads only)."""
    status = trail.show(target().conninfo, table=table, limit=limit)
    emit(status.as_dict(), as_json, lambda: _render(status))


def _render(status: AuditStatus) -> None:
    if status.added or (status.installed and not status.entries and not status.removed):
        audited = ", ".join(status.tables) or "no table"
        console.print(f"Audited in {escape(status.database)}: {escape(audited)}.", highlight=False)
    if status.removed or status.trail_dropped:
        console.print(
            f"Removed pgdr's triggers from {escape(', '.join(status.removed) or 'no table')}"
            + (" and dropped the trail." if status.trail_dropped else "."),
            highlight=False,
        )
    if status.entries:
        shown = Table(title=f"pgdr_audit ({status.trail_rows:,} rows)", title_justify="left")
        for column in ("at", "table", "op", "key", "role", "xid"):
            shown.add_column(column)
        for e in status.entries:
            key = json.dumps(e["key"]) if e["key"] is not None else ""
            shown.add_row(
                e["at"], escape(e["table"]), e["op"], escape(key), escape(e["role"]), str(e["xid"])
            )
        console.print(shown)
    for note in status.notes:
        console.print(escape(note), highlight=False)
