"""``pgdr incident``: list, show, acknowledge, resolve and review incidents (one store).

Read commands (list, show) never connect to the database, so they work while it is down. Every
database of the fleet is listed (``--db NAME`` for one); an id is looked up in all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pgdr.cli.common import JsonOption, settings
from pgdr.core.output import console, emit, escape, markup, styled
from pgdr.core.time import utc_text
from pgdr.incident.store import Incident
from pgdr.notify import Outcome
from pgdr.watch import acknowledge, finish_review, resolve, start_review
from pgdr.watch.workflow import listed, locate

app = typer.Typer(help="Incidents: list, show, ack, resolve, review.", no_args_is_help=True)

IdArgument = Annotated[str, typer.Argument(help="Incident id (or a unique prefix).")]
ByOption = Annotated[str | None, typer.Option("--by", help="Who (default: your user name).")]
NoteOption = Annotated[str, typer.Option("--note", help="A sentence for the timeline.")]
DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Only this database of pgdr.toml's \\[databases.NAME]."),
]


def incidents_table(chosen: list[tuple[str, Incident]]) -> Table:
    table = Table(title="Incidents")
    for column in ("id", "database", "severity", "check", "state", "since (UTC)", "message"):
        table.add_column(column)
    for db, i in chosen:
        table.add_row(
            i.id,
            escape(db),
            i.severity,
            escape(i.check),
            i.state,
            utc_text(i.opened_at),
            escape(i.message),
        )
    return table


def emit_incidents(chosen: list[tuple[str, Incident]], as_json: bool) -> None:
    """Incidents with their database, as JSON or a table."""
    data = [i.as_dict() | {"database": name} for name, i in chosen]
    emit(data, as_json, lambda: console.print(incidents_table(chosen)))


def _render_outcomes(outcomes: list[Outcome]) -> None:
    for o in outcomes:
        mark = (
            styled("sent", "green") if o.delivered else markup("[red]failed[/] ({})", o.error or "")
        )
        console.print(f"  {o.contact} via {o.channel}:", mark)


@app.command("list")
def list_incidents(
    include_resolved: Annotated[bool, typer.Option("--all", help="Include resolved.")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Open incidents (and those whose review is pending); --all for every one."""
    emit_incidents(listed(settings(), db, include_resolved), as_json)


@app.command()
def show(ref: IdArgument, db: DbOption = None, as_json: JsonOption = False) -> None:
    """One incident with its timeline and the runbook action."""
    found = locate(settings(), ref, db)
    incident = found.incident
    data = incident.as_dict() | {"database": found.database}

    def render() -> None:
        console.print(
            styled(incident.id, "bold"),
            f"{incident.severity} {incident.state} ({escape(found.database)})",
        )
        console.print(f"What broke: {escape(incident.message)}")
        console.print(f"Runbook action: {escape(data['action'])}")
        for e in incident.events:
            who = f" ({escape(str(e['by']))})" if e.get("by") else ""
            console.print(
                f"  {utc_text(e['at'])} {e['event']}{who}: {escape(str(e.get('message', '')))}"
            )
        if incident.review_status:
            console.print(f"Review: {incident.review_status} {incident.review_path or ''}")

    emit(data, as_json, render)


@app.command()
def ack(
    ref: IdArgument,
    by: ByOption = None,
    note: NoteOption = "",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Acknowledge: you are on it; stops the escalation to the next level."""
    incident, outcomes = acknowledge(settings(), ref, by, note, db)

    def render() -> None:
        console.print(f"Acknowledged {incident.id} ({incident.acknowledged_by}).")
        _render_outcomes(outcomes)

    emit(incident.as_dict() | {"notifications": [o.as_dict() for o in outcomes]}, as_json, render)


@app.command("resolve")
def resolve_command(
    ref: IdArgument,
    by: ByOption = None,
    note: NoteOption = "",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resolve by hand; P0/P1 incidents then wait for their review."""
    incident, outcomes = resolve(settings(), ref, by, note, db)

    def render() -> None:
        console.print(f"Resolved {incident.id}: {incident.state}.")
        if incident.review_status == "pending":
            console.print(f"Write the review: pgdr incident review {incident.id}")
        _render_outcomes(outcomes)

    emit(incident.as_dict() | {"notifications": [o.as_dict() for o in outcomes]}, as_json, render)


@app.command()
def review(
    ref: IdArgument,
    done: Annotated[
        bool, typer.Option("--done", help="Store the completed document (ends 'review pending').")
    ] = False,
    file: Annotated[
        Path | None, typer.Option("--file", help="The completed document (default: the draft).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Draft again over an existing draft.")
    ] = False,
    by: ByOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Draft the post-incident review (pre-filled timeline), or store it with --done."""
    s = settings()
    if done:
        incident = finish_review(s, ref, file, by, db)
        emit(
            incident.as_dict(),
            as_json,
            lambda: console.print(f"Review of {incident.id} stored at {incident.review_path}."),
        )
        return
    path = start_review(s, ref, force, db)
    emit(
        {"incident": ref, "path": str(path)},
        as_json,
        lambda: console.print(
            f"Drafted {path}: complete each section, then `pgdr incident review {ref} --done`."
        ),
    )
