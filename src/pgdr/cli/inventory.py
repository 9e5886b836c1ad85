"""``pgdr inventory``: pre-migration inventories of embeddings per chatbot, and their check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pgdr.cli.check import (
    ForceOption,
    ProfileOption,
    TimeoutOption,
    chosen_profile,
    fail_on_critical,
    render_report,
)
from pgdr.cli.common import JsonOption, command_group, settings, subcommand_named
from pgdr.cli.database import target
from pgdr.core.output import console, emit, markup
from pgdr.core.records import RecordStore
from pgdr.integrity.findings import Report
from pgdr.integrity.inventory import compare_inventory, take_inventory, write_csv

app = command_group("Embeddings per chatbot before a migration, and the check afterwards.")


@app.callback()
def inventory(
    ctx: typer.Context,
    profile: ProfileOption = None,
    save: Annotated[
        bool, typer.Option("--save", help="Save it under PGDR_HOME/records/inventories.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Also write <source>-inventory.csv files to this directory."),
    ] = None,
    force: ForceOption = False,
    timeout: TimeoutOption = 300.0,
    as_json: JsonOption = False,
) -> None:
    """Count rows and vectors per group (chatbot) of every embedding source."""
    if subcommand_named(ctx):
        return
    spec = chosen_profile(profile)
    report = Report("inventory", target().redacted(), spec.name)
    data = take_inventory(target().conninfo, spec, timeout, report)
    if save:
        data["path"] = str(RecordStore(settings().home, "inventory").save(data, force=force))
    if output is not None:
        data["csv"] = [str(p) for p in write_csv(data, output, force)]
    data["skipped"] = [s.reason for s in report.skipped]

    def render() -> None:
        table = Table(title=f"Inventory {data['id']}", title_justify="left")
        for column in ("source", "table", "groups", "rows", "with vector"):
            table.add_column(column, justify="left" if column in ("source", "table") else "right")
        for name, src in data["sources"].items():
            table.add_row(
                name,
                src["table"],
                f"{len(src['groups']):,}",
                f"{src['rows']:,}",
                f"{src['with_vector']:,}",
            )
        console.print(table)
        for reason in data["skipped"]:
            console.print(markup("[yellow]skipped:[/] {}", reason), highlight=False)
        if "path" in data:
            console.print(f"Saved to {data['path']}.", highlight=False)
        for path in data.get("csv", []):
            console.print(f"Wrote {path}.", highlight=False)

    emit(data, as_json, render)


@app.command()
def compare(
    inventory_ref: Annotated[
        str | None,
        typer.Argument(metavar="[INVENTORY]", help="Inventory id or file (default: the newest)."),
    ] = None,
    profile: ProfileOption = None,
    timeout: TimeoutOption = 300.0,
    as_json: JsonOption = False,
) -> None:
    """Every chatbot back to its count, every vector present; exit 1 when not."""
    spec = chosen_profile(profile)
    baseline, _path = RecordStore(settings().home, "inventory").load(inventory_ref)
    report = compare_inventory(target().conninfo, baseline, spec, timeout)

    def render() -> None:
        table = Table(title=f"Compared with inventory {baseline['id']}", title_justify="left")
        for column in ("source", "complete groups", "rows then/now", "vectors then/now"):
            table.add_column(column, justify="left" if column == "source" else "right")
        for src in report.sections["sources"]:
            table.add_row(
                src["source"],
                f"{src['groups_complete']:,}/{src['groups_before']:,}",
                f"{src['rows']['before']:,}/{src['rows']['now']:,}",
                f"{src['with_vector']['before']:,}/{src['with_vector']['now']:,}",
            )
        console.print(table)
        render_report(report, "Differences")

    emit(report.as_dict(), as_json, render)
    fail_on_critical(report)
