"""``pgdr monitor`` and ``pgdr serve``: health reports, scheduled checks, incidents, the API."""

from __future__ import annotations

import threading
from typing import Annotated, Any

import typer
from rich.table import Table

from pgdr.agent import DatabaseHandle, database_handle, database_handles, database_monitor
from pgdr.cli.common import JsonOption, settings
from pgdr.cli.database import pool_settings, target
from pgdr.cli.incident import emit_incidents
from pgdr.config import PgdrSettings
from pgdr.core.output import console, emit, err_console, markup, styled
from pgdr.monitoring import SEVERITY_LEVELS, CheckResult, collect_report
from pgdr.monitoring.metrics import MetricsSnapshot
from pgdr.monitoring.monitor import Monitor
from pgdr.pool import connect
from pgdr.watch import MonitorSetup
from pgdr.watch.workflow import listed

app = typer.Typer(help="Health reports, scheduled checks and incidents.", no_args_is_help=True)


DbOption = Annotated[
    str | None,
    typer.Option("--db", help="A database of pgdr.toml's \\[databases.NAME] (its metrics label)."),
]
ServeDbOption = Annotated[
    str | None,
    typer.Option("--db", help="One database of pgdr.toml's \\[databases.NAME]; default: all."),
]


def _setup(
    s: PgdrSettings, handle: DatabaseHandle, interval: float, with_pool: bool = False
) -> MonitorSetup:
    """The monitor of one database of the fleet, with the protection checks and the notifier
    (see pgdr.watch); a declared database brings its own records and namespaced repository."""
    return database_monitor(handle, interval, pool_settings(s).settings, with_pool)


def _monitor(interval: float = 120, db: str | None = None) -> Monitor:
    s = settings()
    return _setup(s, database_handle(s, db), interval).monitor


def _checks_table(results: list[CheckResult]) -> Table:
    table = Table(title="Checks")
    for column in ("check", "result", "severity", "detail"):
        table.add_column(column)
    for r in results:
        result = (
            styled("skipped", "")
            if r.skipped
            else (styled("ok", "green") if r.ok else styled("failed", "red"))
        )
        table.add_row(r.name, result, r.severity.value if r.severity else "", r.message)
    return table


def _emit_round(snap: MetricsSnapshot, as_json: bool) -> None:
    emit(snap.as_dict(), as_json, lambda: console.print(_checks_table(snap.checks)))


@app.command()
def report(
    long_query_seconds: Annotated[float, typer.Option(help="Threshold for long queries.")] = 300,
    as_json: JsonOption = False,
) -> None:
    """The runbook's manual health checks: latency, sizes, connections, long queries, bloat."""
    s = settings()
    with connect(target(s).conninfo, pool_settings(s).settings) as conn:
        rep = collect_report(conn, long_query_seconds)

    def render() -> None:
        console.print(f"Server time {rep.server_time}, round trip {rep.latency_ms} ms")
        console.print(
            f"Connections: {rep.connections} of {rep.max_connections} "
            f"({rep.active} active, {rep.idle_in_transaction} idle in transaction)"
        )
        sizes = Table(title="Table sizes")
        sizes.add_column("table")
        sizes.add_column("size", justify="right")
        for t in rep.tables:
            sizes.add_row(f"{t.schema}.{t.table}", f"{t.bytes / 1e6:,.1f} MB")
        console.print(sizes)
        for q in rep.long_queries:
            console.print(
                markup(
                    "[yellow]long query[/] pid {}: {:.0f} s ({}) {}",
                    q.pid,
                    q.seconds,
                    q.state,
                    q.query,
                )
            )
        for b in rep.bloat:
            console.print(
                markup(
                    "[yellow]bloat[/] {}.{}: {} dead ({}%)",
                    b.schema,
                    b.table,
                    b.dead_tuples,
                    b.dead_pct,
                )
            )

    emit(rep.as_dict(), as_json, render)


@app.command()
def run(
    once: Annotated[
        bool, typer.Option("--once", help="One round, then exit (1 if any check failed).")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between rounds (runbook: 120).")] = 120,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run every check on a schedule, record history and open/resolve incidents."""
    monitor = _monitor(interval, db)
    if once:
        snap = monitor.run_once()
        _emit_round(snap, as_json)
        if any(not c.ok and not c.skipped for c in snap.checks) or not snap.healthy:
            raise typer.Exit(1)
        return
    monitor.run_forever(threading.Event(), on_round=lambda snap: _emit_round(snap, as_json))


@app.command()
def incidents(
    include_resolved: Annotated[
        bool, typer.Option("--all", help="Include resolved incidents.")
    ] = False,
    db: ServeDbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List incidents (open ones by default) of every database; the same as `pgdr incident list`."""
    # local records: works while the database is down
    emit_incidents(listed(settings(), db, include_resolved), as_json)


@app.command()
def severities(as_json: JsonOption = False) -> None:
    """The runbook's severity levels and their recovery-time objectives."""
    data: list[dict[str, Any]] = [
        {
            "severity": lvl.severity.value,
            "name": lvl.name,
            "rto_hours": lvl.rto.total_seconds() / 3600,
            "examples": list(lvl.examples),
            "post_incident_review": lvl.needs_review,
        }
        for lvl in SEVERITY_LEVELS.values()
    ]

    def render() -> None:
        table = Table(title="Severity levels")
        for column in ("level", "name", "RTO", "examples"):
            table.add_column(column)
        for row in data:
            table.add_row(
                str(row["severity"]),
                str(row["name"]),
                f"{row['rto_hours']:g} h",
                "; ".join(row["examples"]),
            )
        console.print(table)

    emit(data, as_json, render)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    interval: Annotated[float, typer.Option(help="Seconds between monitor rounds.")] = 120,
    health_cache: Annotated[
        float,
        typer.Option(
            "--health-cache", min=0, help="Seconds a /api/health result is reused (one probe)."
        ),
    ] = 1.0,
    db: ServeDbOption = None,
) -> None:
    """Serve /api/health, /api/monitoring/metrics, /metrics, incidents and the dashboard
    for every configured database (or the one named by --db)."""
    # Not a cycle: FastAPI and uvicorn take about a second to import, which every other
    # pgdr command would pay at start-up if they were imported at the top.
    from pgdr.api import create_app, http_server, http_stack, load_api_token  # noqa: PLC0415

    s = settings()
    token, note = load_api_token(s.home)
    if note:
        err_console.print(styled(note, "yellow"))
    setups = [_setup(s, h, interval, with_pool=True) for h in database_handles(s, db)]
    app = create_app(setups, token, health_ttl_s=health_cache)
    err_console.print(
        f"Serving on http://{host}:{port}/ (token required except /api/health; "
        f"{', '.join(http_stack())})",
        soft_wrap=True,
    )
    http_server(app, host, port).run()
