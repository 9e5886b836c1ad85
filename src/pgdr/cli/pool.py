"""``pgdr pool`` and ``pgdr health``: effective pool settings, sizing advice, the health probe."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pgdr.cli.common import JsonOption, settings
from pgdr.cli.database import pool_settings, target
from pgdr.config.pool_settings import POOL_VARIABLES
from pgdr.core.output import console, emit, key_value_table, markup, styled
from pgdr.pool import advise_pool, connect
from pgdr.pool.advice import plan_limit
from pgdr.pool.health import target_health

app = typer.Typer(help="Connection-pool settings and sizing.", no_args_is_help=True)


@app.command()
def show(as_json: JsonOption = False) -> None:
    """Print the effective pool settings and where each one came from."""
    resolved = pool_settings()
    values = resolved.settings.model_dump()
    data = {
        "environment": resolved.environment,
        "settings": {
            POOL_VARIABLES[f][0]: {"value": values[f], "source": resolved.sources[f]}
            for f in values
        },
    }

    def render() -> None:
        table = Table(title=f"Pool settings (environment: {resolved.environment or 'none'})")
        for column in ("variable", "value", "source"):
            table.add_column(column)
        for field, value in values.items():
            table.add_row(POOL_VARIABLES[field][0], str(value), resolved.sources[field])
        console.print(table)

    emit(data, as_json, render)


@app.command()
def advise(
    instances: Annotated[
        int, typer.Option(min=1, help="Application instances sharing the server.")
    ] = 1,
    limit: Annotated[
        str | None,
        typer.Option(
            "--limit",
            help="The plan's connection limit: a number, free (60) or pro (200); "
            "default: the server's max_connections minus reserved slots.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check DB_POOL_MAX against 60-70% of the connection limit; exit 1 when over."""
    s = settings()
    resolved = pool_settings(s)
    plan = plan_limit(limit) if limit is not None else None
    with connect(target(s).conninfo, resolved.settings) as conn:
        advice = advise_pool(conn, resolved.settings, instances, plan)

    def render() -> None:
        console.print(
            key_value_table(
                "Pool sizing", [(k, v) for k, v in advice.as_dict().items() if k != "message"]
            )
        )
        style = "red" if advice.over_limit else "green"
        console.print(styled(advice.message, style))

    emit(advice.as_dict(), as_json, render)
    if advice.over_limit:
        raise typer.Exit(1)


def health(
    use_pool: Annotated[
        bool,
        typer.Option(
            "--pool", help="Probe through a pool built from the settings and report its stats."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Probe the database (the runbook's checkDatabaseHealth); exit 1 when unhealthy."""
    s = settings()
    report = target_health(lambda: target(s).conninfo, pool_settings(s).settings, use_pool)

    def render() -> None:
        if report.healthy:
            console.print(
                markup(
                    "[green]healthy[/] latency {} ms (PostgreSQL {})",
                    report.latency_ms,
                    report.server_version,
                )
            )
        else:
            console.print(markup("[red]unhealthy[/] {}", report.error))
        if report.pool:
            console.print(key_value_table("Pool", list(report.pool.items())))

    emit(report.as_dict(), as_json, render)
    if not report.healthy:
        raise typer.Exit(1)
