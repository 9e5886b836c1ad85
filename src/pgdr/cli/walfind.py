"""``pgdr wal find``: the transactions that changed a table, read from the archived WAL."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pgdr.backup import open_repository
from pgdr.cli.common import JsonOption, settings
from pgdr.cli.database import target
from pgdr.cli.repository import RepoOption
from pgdr.core.output import console, emit, escape
from pgdr.wal.archive import WalArchive
from pgdr.wal.find import FindReport, find_changes, parse_moment


def find(
    table: Annotated[str, typer.Option("--table", help="The table whose changes to find.")],
    since: Annotated[str | None, typer.Option(help="Start of the window (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="End of the window (ISO 8601).")] = None,
    op: Annotated[
        str | None, typer.Option("--op", help="Only delete, update, insert or truncate.")
    ] = None,
    repo_name: RepoOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find the transactions that changed a table, from the archived WAL (pg_waldump)."""
    repo = open_repository(settings(), repo_name)
    archive = WalArchive.open(repo.store, repo.master_key)
    report = find_changes(
        archive,
        repo.list_backups(),
        target().conninfo,
        table,
        since=parse_moment(since, "--since"),
        until=parse_moment(until, "--until"),
        op=op,
    )
    emit(report.as_dict(), as_json, lambda: render_find(report))


def render_find(report: FindReport) -> None:
    out = Table(
        title=f"Changes to {escape(report.table)} in the WAL ({len(report.segments)} segments)",
        title_justify="left",
    )
    audited = any(tx.audit for tx in report.transactions)
    columns = ["xid", "commit time (UTC)", "status", "ops", "deleted", "updated", "inserted"]
    for column in columns + (["by (pgdr_audit)"] if audited else []):
        out.add_column(column, justify="right" if column in columns[4:7] else "left")
    for tx in report.transactions:
        style = "bold red" if tx.xid == report.suspect else None
        by = [escape(str(tx.audit["role"])) if tx.audit else ""] if audited else []
        out.add_row(
            str(tx.xid),
            (tx.commit_time or "")[:23].replace("T", " "),
            tx.status,
            ", ".join(tx.ops) or "rewrite",
            f"{tx.rows['delete']:,}",
            f"{tx.rows['update']:,}",
            f"{tx.rows['insert']:,}",
            *by,
            style=style,
        )
    console.print(out)
    for note in report.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    if report.suspect is None:
        console.print("No committed transaction in the window changed the table that way.")
        return
    console.print(f"Stands out: transaction {report.suspect}. To restore to just before it:")
    for command in report.restore_commands:
        console.print(f"  {command}", highlight=False)
