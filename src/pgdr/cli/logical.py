"""``pgdr undelete``, ``pgdr restore-table`` and ``pgdr export``: the runbook's surgical and
logical recoveries, each one call into ``pgdr.logical``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pgdr.cli.check import chosen_profile
from pgdr.cli.common import JsonOption, confirmed
from pgdr.cli.database import target
from pgdr.cli.repository import RepoOption, open_repo
from pgdr.core.errors import ConfigError
from pgdr.core.output import console, emit, err_console, escape
from pgdr.logical.export import export_tables, export_to_directory, export_to_repository
from pgdr.logical.table import TableRestore
from pgdr.logical.table import restore_table as run_restore_table
from pgdr.logical.table_backup import restore_table_from_backup as run_table_from_backup
from pgdr.logical.undelete import UndeleteResult
from pgdr.logical.undelete import undelete as run_undelete


def _show_preview(preview: dict[str, int], title: str) -> None:
    out = Table(title=title, title_justify="left")
    out.add_column("table")
    out.add_column("rows", justify="right")
    for table, rows in preview.items():
        out.add_row(escape(table), f"{rows:,}")
    err_console.print(out)


def undelete(
    table: Annotated[str, typer.Option("--table", help="The table rows were deleted from.")],
    key: Annotated[list[str], typer.Option("--key", help="Key of a deleted row (repeatable).")],
    at: Annotated[
        str,
        typer.Option(help="'auto' (find the deleting transaction in the WAL) or a time before it."),
    ] = "auto",
    key_column: Annotated[
        str | None, typer.Option("--key-column", help="Column of --key (default: primary key).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Insert without asking.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show what would be inserted.")
    ] = False,
    repo_name: RepoOption = None,
    as_json: JsonOption = False,
) -> None:
    """Put deleted rows and their children back from a throwaway point-in-time copy.

    Dry run unless --yes (on a terminal pgdr shows the rows and asks).
    """
    ask = sys.stdin.isatty() and not as_json and not dry_run and not yes

    def confirm(preview: dict[str, int]) -> bool:
        _show_preview(preview, "Rows to put back (from the copy)")
        return confirmed("Insert them?")

    result = run_undelete(
        open_repo(repo_name),
        target().conninfo,
        table,
        key,
        at=at,
        key_column=key_column,
        apply=yes and not dry_run,
        confirm=confirm if ask else None,
    )
    emit(result.as_dict(), as_json, lambda: _render_undelete(result))


def _render_undelete(result: UndeleteResult) -> None:
    for note in result.notes:
        console.print(escape(note), highlight=False)
    if not result.applied:
        _show_preview(result.preview, "Rows that would be put back (dry run: nothing inserted)")
        console.print("Pass --yes to insert them.")
        return
    total = sum(result.inserted.values())
    console.print(
        f"{total:,} row(s) put back into {len(result.inserted)} table(s) in "
        f"{result.duration_s:.1f} s; the throwaway cluster was removed.",
        highlight=False,
    )


def restore_table(
    table: Annotated[str, typer.Argument(help="The table to restore (schema.name or name).")],
    from_dump: Annotated[
        str | None, typer.Option("--from", help="Dump id, unique prefix or 'latest'.")
    ] = None,
    from_backup: Annotated[
        str | None,
        typer.Option(
            "--from-backup", help="Base backup id, prefix or 'latest' (a throwaway copy)."
        ),
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="With --from-backup: the table as of this time.")
    ] = None,
    xid: Annotated[
        str | None, typer.Option("--xid", help="With --from-backup: as of this transaction.")
    ] = None,
    exclusive: Annotated[
        bool, typer.Option("--exclusive", help="Stop just before --xid/--at.")
    ] = False,
    as_name: Annotated[
        str | None, typer.Option("--as", help="Name of the restored table (default: NAME_<date>).")
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Make the live table hold the restored rows.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Confirm --replace, or overwrite the --as table.")
    ] = False,
    repo_name: RepoOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restore one table from a dump (--from) or a base backup / point in time (--from-backup):
    beside the live table by default, or --replace --force."""
    if (from_dump is None) == (from_backup is None):
        raise ConfigError("Give one source: --from DUMP_ID or --from-backup BACKUP_ID.")
    if from_dump is not None and (at or xid or exclusive):
        raise ConfigError("--at, --xid and --exclusive go with --from-backup.")
    repo, conninfo = open_repo(repo_name), target().conninfo
    result = (
        run_restore_table(
            repo, conninfo, table, from_dump, as_name=as_name, replace=replace, force=force
        )
        if from_dump is not None
        else run_table_from_backup(
            repo,
            conninfo,
            table,
            str(from_backup),
            at=at,
            xid=xid,
            exclusive=exclusive,
            as_name=as_name,
            replace=replace,
            force=force,
        )
    )

    emit(result.as_dict(), as_json, lambda: _render_table(result))


def _render_table(result: TableRestore) -> None:
    if result.replaced:
        console.print(
            f"{escape(result.table)} now holds the {result.rows:,} rows of "
            f"{escape(result.source)}: {result.deleted:,} deleted, "
            f"{result.upserted:,} inserted or updated, in one transaction.",
            highlight=False,
        )
    else:
        console.print(
            f"{result.rows:,} rows of {escape(result.table)} from {escape(result.source)} "
            f"restored as {escape(result.restored_as)}.",
            highlight=False,
        )
    if result.unmapped:
        console.print(
            "Columns in the source but no longer in the table (not restored): "
            + escape(", ".join(result.unmapped)),
            highlight=False,
        )
    if result.defaulted:
        console.print(
            "Columns added since (left to their defaults): " + escape(", ".join(result.defaulted)),
            highlight=False,
        )
    for note in result.notes:
        console.print(escape(note), highlight=False)


def export(
    tables: Annotated[
        list[str] | None,
        typer.Option("--tables", help="A table to export (repeatable; default: the profile's)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write plain CSV files here instead.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty --out.")] = False,
    profile: Annotated[str | None, typer.Option(help="Profile naming the tables.")] = None,
    label: Annotated[str | None, typer.Option(help="A note stored with the export.")] = None,
    repo_name: RepoOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export critical tables as CSV from one snapshot, into the repository (encrypted)."""
    chosen = export_tables(chosen_profile(profile), tables)
    conninfo = target().conninfo
    if out is not None:
        result = export_to_directory(conninfo, chosen, out, force=force)
    else:
        result, _manifest = export_to_repository(
            open_repo(repo_name), conninfo, chosen, label=label
        )

    def render() -> None:
        shown = Table(title=f"Exported to {escape(result.stored_as)}", title_justify="left")
        for column in ("table", "rows", "bytes", "sha256"):
            shown.add_column(column, justify="right" if column in ("rows", "bytes") else "left")
        for name, info in result.tables.items():
            shown.add_row(escape(name), f"{info['rows']:,}", f"{info['bytes']:,}", info["sha256"])
        console.print(shown)
        console.print(f"All tables from {result.snapshot}.")

    emit(result.as_dict(), as_json, render)
