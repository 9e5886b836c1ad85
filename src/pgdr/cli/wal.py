"""``pgdr wal``: stream, push (archive_command), fetch (restore_command), setup, status, sync."""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from pgdr.backup import open_repository
from pgdr.cli import walfind
from pgdr.cli.common import JsonOption, settings, window_text
from pgdr.cli.database import target as resolve_target
from pgdr.cli.repository import RepoOption
from pgdr.cluster.service_user import resolve_service_user
from pgdr.core.errors import CheckFailed, ConfigError
from pgdr.core.output import console, emit, key_value_table, styled
from pgdr.core.units import parse_duration
from pgdr.wal.archive import WalArchive, repository_archive
from pgdr.wal.server import DEFAULT_APPLICATION, DEFAULT_SLOT, connect, server_info, set_system
from pgdr.wal.setup import (
    apply_setup,
    check_archive_reachable,
    default_archive_env,
    patroni_slots,
    patroni_yaml,
    pgdr_executable,
    plan_setup,
)
from pgdr.wal.status import repository_wal_status
from pgdr.wal.stream import (
    SYNC_SWITCH,
    StreamRequest,
    stream_until_stopped,
    sync_names_value,
)
from pgdr.wal.syncguard import sync_on_refusal
from pgdr.wal.transfer import fetch_file, push_file, segment_identity

app = typer.Typer(
    help="Continuous WAL: streaming, archiving, setup and status.", no_args_is_help=True
)
app.command("find")(walfind.find)


def _stamp(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def open_archive(
    repo_name: str | None,
    system_identifier: int | None = None,
    segment_size: int | None = None,
) -> WalArchive:
    """The WAL archive of repository ``repo_name``; created for a server when it has none."""
    return repository_archive(
        open_repository(settings(), repo_name), system_identifier, segment_size
    )


@app.command()
def stream(
    synchronous: Annotated[
        bool,
        typer.Option(
            "--synchronous",
            help="Commits wait until their WAL is on pgdr's disk (RPO 0); see the trade-off "
            "in docs/point-in-time-recovery.md.",
        ),
    ] = False,
    degrade_after: Annotated[
        str | None,
        typer.Option(
            help="With --synchronous: after this long without a connection (e.g. 30s, 2m), "
            "switch the server to asynchronous commits (loudly) instead of blocking them.",
        ),
    ] = None,
    quorum_with: Annotated[
        list[str] | None,
        typer.Option(
            help="With --synchronous: a real replica's application name; a commit waits for "
            "either (ANY 1), so one of them may be down.",
        ),
    ] = None,
    spool: Annotated[
        Path | None, typer.Option(help="Local spool (default $PGDR_HOME/wal-spool/<system id>).")
    ] = None,
    slot: Annotated[str, typer.Option(help="Replication slot name.")] = DEFAULT_SLOT,
    application: Annotated[
        str, typer.Option(help="application_name the server sees.")
    ] = DEFAULT_APPLICATION,
    partial_interval: Annotated[
        float, typer.Option(help="Seconds between uploads of the segment being written.")
    ] = 0.25,
    repo_name: RepoOption = None,
) -> None:
    """Stream WAL continuously into the repository until stopped (SIGTERM/SIGINT)."""
    ask = StreamRequest(
        spool=spool,
        slot=slot,
        application=application,
        synchronous=synchronous,
        quorum_with=tuple(quorum_with or ()),
        degrade_after=parse_duration(degrade_after, "--degrade-after") if degrade_after else None,
        partial_interval=partial_interval,
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    s = settings()
    repo = open_repository(s, repo_name)
    stream_until_stopped(s, repo, resolve_target(s).conninfo, ask, stop)


@app.command()
def push(
    path: Annotated[Path, typer.Argument(help="The WAL file (%p of archive_command).")],
    repo_name: RepoOption = None,
    as_json: JsonOption = False,
) -> None:
    """Archive one WAL file (use as archive_command = 'pgdr wal push %p'); idempotent."""
    identity = segment_identity(path) if path.is_file() else None
    archive = open_archive(repo_name, *identity) if identity else open_archive(repo_name)
    result = push_file(archive, path)
    emit(
        {"name": result.name, "stored": result.stored, "bytes": result.bytes_in},
        as_json,
        lambda: None,  # archive_command output lands in the server log: stay quiet
    )


@app.command()
def fetch(
    name: Annotated[str, typer.Argument(help="The WAL file name (%f of restore_command).")],
    dest: Annotated[Path, typer.Argument(help="Where to write it (%p).")],
    partial: Annotated[
        bool, typer.Option("--partial", help="Accept the partial segment for the newest one.")
    ] = False,
    repo_name: RepoOption = None,
) -> None:
    """Restore one WAL file (restore_command = 'pgdr wal fetch %f %p'); exit 1 when absent."""
    fetch_file(open_archive(repo_name), name, dest, allow_partial=partial)


@app.command()
def setup(
    mode: Annotated[str, typer.Option(help="stream (recommended) or archive.")] = "stream",
    apply: Annotated[
        bool, typer.Option("--apply", help="Apply with ALTER SYSTEM and create the slot.")
    ] = False,
    repo_name: RepoOption = None,
    as_json: JsonOption = False,
    patroni: Annotated[
        bool,
        typer.Option("--patroni", help="Print the Patroni slots setting (permanent slot) only."),
    ] = False,
) -> None:
    """Print (or apply) the server settings a WAL mode needs."""
    if patroni:
        emit(
            patroni_slots(),
            as_json,
            lambda: console.print(patroni_yaml(), markup=False, soft_wrap=True),
        )
        return
    s = settings()
    conninfo = resolve_target(s).conninfo
    env = None
    if mode == "archive":
        env = default_archive_env(open_repository(s, repo_name).url, s.home)
        if apply:
            check_archive_reachable(resolve_service_user(s.service_user), env, pgdr_executable())
    plan = plan_setup(conninfo, mode, env)
    if apply:
        plan = apply_setup(conninfo, plan)

    def render() -> None:
        table = Table(title=f"WAL setup for {mode}")
        for column in ("setting", "current", "wanted", "why"):
            table.add_column(column)
        for change in plan.changes:
            mark = "" if change.ok else styled("* ", "yellow")
            table.add_row(
                Text.assemble(mark, change.name), change.current or "", change.wanted, change.why
            )
        console.print(table)
        if plan.slot:
            console.print(f"Slot {plan.slot}: {'exists' if plan.slot_exists else 'missing'}.")
        for note in plan.notes:
            console.print(f"Note: {note}")
        if plan.applied:
            console.print("Applied." + (" Restart the server." if plan.restart_needed else ""))
        elif any(not c.ok for c in plan.changes) or (plan.slot and not plan.slot_exists):
            console.print("Run again with --apply to apply the changes marked *.")

    emit(plan.as_dict(), as_json, render)


@app.command()
def status(repo_name: RepoOption = None, as_json: JsonOption = False) -> None:
    """What WAL the repository holds, gaps, the streamer's state and lag (exit 1 on a problem)."""
    try:
        conninfo: str | None = resolve_target(settings()).conninfo
    except ConfigError:
        conninfo = None  # no server configured: the lag is reported as not measured
    report = repository_wal_status(open_repository(settings(), repo_name), conninfo)
    data = report.as_dict()

    def render() -> None:
        rows: list[tuple[str, Any]] = [
            ("repository", report.repository),
            ("system", report.system_identifier),
            ("stored", f"{report.stored_bytes / 1e6:,.1f} MB"),
            ("newest WAL", _stamp(report.newest_wal_at)),
            (
                "recovery window",
                window_text(_stamp(report.window_start), _stamp(report.window_end))
                if report.window_start
                else (
                    "none: no backup has all the WAL it needs here"
                    if report.backups_without_wal
                    else "none yet: take a base backup (`pgdr backup`)"
                ),
            ),
            ("gaps", ", ".join(report.gaps) or "none"),
            ("repository at", report.repository_lsn),
            (
                "server at",
                report.server_lsn
                or f"not measured: {report.server_error or 'no server configured'}",
            ),
            ("behind by", None if report.lag_bytes is None else f"{report.lag_bytes:,} bytes"),
        ]
        rows += [("without its WAL", line) for line in report.backups_without_wal]
        if report.streamer:
            st = report.streamer
            rows += [
                ("streamer", f"{st['state']} ({'alive' if report.streamer_alive else 'silent'})"),
                ("received", st.get("received_lsn")),
                ("sync", st.get("sync_state")),
            ]
        console.print(key_value_table("WAL", rows))
        table = Table(title="Timelines")
        for column in ("timeline", "first", "last", "segments", "partial"):
            table.add_column(column)
        for t in report.timelines:
            table.add_row(str(t.timeline), t.first, t.last, str(t.segments), t.partial)
        console.print(table)

    emit(data, as_json, render)
    if report.problems:
        raise CheckFailed(" ".join(report.problems))


@app.command()
def sync(
    state: Annotated[str, typer.Argument(help="on or off.")],
    application: Annotated[str, typer.Option(help="The streamer's application_name.")] = (
        DEFAULT_APPLICATION
    ),
    repo_name: RepoOption = None,
    as_json: JsonOption = False,
) -> None:
    """Switch synchronous commits to pgdr on or off (the operator's explicit way out).

    ``on`` is refused (exit 2, nothing changed) unless this repository's `pgdr wal stream
    --synchronous` is connected now: otherwise every commit would block.
    """
    if state not in ("on", "off"):
        raise ConfigError("Say `pgdr wal sync on` or `pgdr wal sync off`.")
    conninfo = resolve_target(settings()).conninfo
    info = server_info(conninfo)
    archive = open_archive(repo_name, info.system_identifier, info.segment_size)
    streamer = archive.get_state("streamer")
    # the streamer's own value: a --quorum-with streamer keeps its quorum
    quorum = list((streamer or {}).get("quorum_with") or [])
    value = sync_names_value(application, quorum) if state == "on" else ""
    with connect(conninfo) as conn:
        if state == "on":
            # every commit would wait for a standby that never (or only now and then) confirms
            refusal = sync_on_refusal(conn, streamer, application)
            if refusal:
                raise ConfigError(f"{refusal}; nothing was changed.")
        # a running `wal stream --synchronous` reads this and leaves the operator's choice
        # alone; recorded before the server changes, so the streamer never undoes it in between
        archive.put_state(SYNC_SWITCH, {"off": state == "off", "at": time.time()})
        set_system(conn, "synchronous_standby_names", value)
    emit(
        {"synchronous_standby_names": value},
        as_json,
        lambda: console.print(
            "Commits now wait for pgdr (RPO 0)."
            if state == "on"
            else styled("Commits no longer wait for pgdr: RPO is the streamer's lag.", "yellow")
        ),
    )
