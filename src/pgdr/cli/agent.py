"""``pgdr agent`` (run, ``install``) and ``pgdr status``: the front door of :mod:`pgdr.agent`."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from pgdr.agent import Agent, AgentOptions, database_handles, fleet_status, nagios_line
from pgdr.agent.status import EXIT_CODES
from pgdr.agent.systemd import UNIT_PATH, UnitOptions, install_unit, unit_text
from pgdr.cli.common import JsonOption, settings, window_text
from pgdr.config import PgdrSettings
from pgdr.config.fleet import load_agent_config
from pgdr.core.errors import ConfigError, PgdrError
from pgdr.core.output import console, emit, key_value_table, say

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="A database of \\[databases.NAME] in pgdr.toml, or all (default)."),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="The pgdr.toml to use (default: $PGDR_HOME, then /etc/pgdr)."),
]

app = typer.Typer(
    help="Keep every configured database streamed, backed up, pruned and proven restorable.",
    invoke_without_command=True,
)


def _settings(config: Path | None) -> PgdrSettings:
    s = settings()
    if config is not None:
        if not config.is_file():
            raise ConfigError(f"--config {config} is not a file.")
        s = s.model_copy(update={"config": config})
    return s


@app.callback()
def agent(
    ctx: typer.Context,
    db: DbOption = None,
    config: ConfigOption = None,
    serve: Annotated[
        bool, typer.Option("--serve", help="Also serve the HTTP API (as `pgdr serve`).")
    ] = False,
    host: Annotated[str, typer.Option(help="With --serve: address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="With --serve: port to listen on.")] = 8080,
) -> None:
    """Run until SIGTERM: WAL streaming, scheduled backups, restore tests, checks, drills."""
    if ctx.invoked_subcommand is not None:
        return
    s = _settings(config)
    agent_ = Agent(database_handles(s, db), AgentOptions.from_config(load_agent_config(s)))
    stop = threading.Event()
    on_stop: list[Callable[[], None]] = []

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()
        for callback in on_stop:
            callback()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if serve:
        on_stop.append(_serve(agent_, host, port))
    agent_.run(stop)


def _serve(agent_: Agent, host: str, port: int) -> Callable[[], None]:
    """Start `pgdr serve`'s app on a thread (the agent owns the signals); returns its stopper."""
    from pgdr.api import create_app, http_server, load_api_token  # noqa: PLC0415 - only --serve
    from pgdr.monitoring.monitor import Monitor  # noqa: PLC0415

    first = agent_.workers[0].handle
    token, note = load_api_token(first.settings.home)
    if note:
        say(note, style="yellow", err=True)
    monitor = Monitor(first.target().conninfo, first.records)
    server = http_server(create_app(monitor, token), host, port)
    threading.Thread(target=server.run, name="pgdr-api", daemon=True).start()

    def stop_server() -> None:
        server.should_exit = True

    return stop_server


@app.command()
def install(
    systemd: Annotated[
        bool, typer.Option("--systemd", help="Write a systemd unit (the only kind so far).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the unit; write nothing.")
    ] = False,
    db: DbOption = None,
    config: ConfigOption = None,
    serve: Annotated[bool, typer.Option("--serve", help="The unit also serves the API.")] = False,
    unit: Annotated[Path, typer.Option(help="Where to write the unit.")] = UNIT_PATH,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing unit.")] = False,
) -> None:
    """Install the agent as a service (Restart=always, hardened)."""
    if not systemd:
        raise ConfigError("Say how to install the agent: --systemd.")
    s = _settings(config)
    database_handles(s, db)  # the configuration must be valid before a unit runs it
    text = unit_text(UnitOptions(s.home, config.resolve() if config else None, db, serve))
    if dry_run:
        sys.stdout.write(text)
        return
    path = install_unit(text, unit, force)
    say(
        f"Wrote {path}. Start it with: systemctl daemon-reload && systemctl enable --now pgdr-agent"
    )


def _restore_test_text(test: dict[str, Any]) -> str:
    """The last restore test: when, and the RTO it proved (a failed one proved none)."""
    if not test.get("passed"):
        return f"{test['at']}: FAILED"
    return f"{test['at']}: passed, proven RTO {test.get('proven_rto_s')} s"


def _render_database(name: str, db: dict[str, Any]) -> None:
    backup = db.get("last_backup")
    wal = db.get("wal") or {}
    test = db.get("last_restore_test")
    window = db.get("recovery_window") or {}
    rows: list[tuple[str, Any]] = [
        ("state", db["state"]),
        (
            "last backup",
            f"{backup['id']} ({backup['kind']}), {backup['age_seconds']:.0f} s ago, "
            f"{backup['stored_bytes']} bytes stored, verified: {backup['verified']}"
            if backup
            else "none",
        ),
        (
            "WAL streamer",
            f"{'up' if wal.get('streaming') else 'DOWN'}, lag {wal.get('lag_bytes')} bytes / "
            f"{wal.get('lag_seconds')} s"
            if wal.get("configured")
            else "not configured",
        ),
        (
            "recovery window",
            window_text(window.get("start"), window.get("end")) if window else "none",
        ),
        (
            "last restore test",
            _restore_test_text(test) if test else "none",
        ),
    ]
    drill = db.get("last_drill")
    rows.append(
        (
            "last drill",
            f"{drill['at']}: {'passed' if drill['passed'] else 'FAILED'} "
            f"({', '.join(drill['scenarios'])}), RTO {drill['rto_s']} s, RPO {drill['rpo_s']} s"
            if drill
            else "none",
        )
    )
    for job, info in (db.get("next_jobs") or {}).items():
        rows.append((f"next {job}", f"{info['next_due']} (last ok: {info['last_ok']})"))
    rows.append(("open incidents", len(db.get("incidents", []))))
    console.print(key_value_table(f"Database {name}", rows))
    colour = {"protected": "green", "degraded": "yellow", "unprotected": "red"}[db["state"]]
    for reason in db["reasons"]:
        say(f"  - {reason}", style=colour)
    for note in db["not_checked"]:
        say(f"  not checked: {note}")


def status(
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    nagios: Annotated[
        bool, typer.Option("--nagios", help="One Nagios plugin line (OK/WARNING/CRITICAL).")
    ] = False,
) -> None:
    """How protected each database is; exit 0 protected, 1 degraded, 2 unprotected."""
    try:
        report = fleet_status(database_handles(_settings(config), db))
    except PgdrError as exc:
        if not nagios:
            raise
        sys.stdout.write(f"PGDR UNKNOWN - {exc.message}\n")
        raise typer.Exit(3) from None
    if nagios:
        sys.stdout.write(nagios_line(report) + "\n")
    else:

        def render() -> None:
            for name, data in report["databases"].items():
                _render_database(name, data)

        emit(report, as_json, render)
    raise typer.Exit(EXIT_CODES[report["state"]])
