"""``pgdr demo``: the README's main job, the runbook end to end on the embedded default.

Starts the embedded database, loads the ConvoAI sample (once), checks health and integrity,
takes an encrypted base backup into the default repository and reads it back, then rehearses the
runbook's three disasters in sandboxes of their own and reports measured RTO and RPO. The
embedded database itself is never harmed: the disasters happen to sandbox copies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import psycopg
import typer
from rich.table import Table

from pgdr.backup import open_repository, take_backup
from pgdr.backup.verify import verify_backup
from pgdr.cli.common import pool_settings, settings
from pgdr.cluster import choose_installation, default_cluster
from pgdr.config import PgdrSettings
from pgdr.core.errors import CheckFailed
from pgdr.core.output import console, err_console, progress_bar
from pgdr.drills import SCENARIOS, DrillOptions, run_drill
from pgdr.integrity import run_check
from pgdr.pool import check_database_health
from pgdr.profile import load_profile
from pgdr.sample import load_sample, scale_counts


@dataclass
class DemoStep:
    name: str
    ok: bool
    detail: str
    seconds: float


def _has_sample(conninfo: str) -> bool:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT to_regclass('public.embeddings') IS NOT NULL").fetchone()
        return bool(row and row[0])


def _timed(steps: list[DemoStep], name: str, work: Callable[[], tuple[bool, str]]) -> None:
    console.print(f"[bold]{name}[/] ...")
    began = time.monotonic()
    ok, detail = work()
    steps.append(DemoStep(name, ok, detail, round(time.monotonic() - began, 1)))
    colour = "green" if ok else "red"
    console.print(f"  [{colour}]{'ok' if ok else 'FAILED'}[/] {detail}", highlight=False)


def _start(s: PgdrSettings) -> tuple[bool, str]:
    cluster = default_cluster(s)
    if not cluster.exists:
        cluster.create(choose_installation(s.pg_bin, s.pg_version))
    cluster.start()
    return True, f"PostgreSQL {cluster.status().version} at {cluster.conninfo()}"


def _sample(conninfo: str, scale: float) -> tuple[bool, str]:
    if _has_sample(conninfo):
        return True, "the ConvoAI sample is already loaded"
    with progress_bar("Loading ConvoAI sample", sum(scale_counts(scale).values())) as advance:
        report = load_sample(conninfo, scale=scale, progress=lambda _t, n: advance(n))
    rows = sum(report.rows.values())
    return True, f"{rows:,} rows, {report.database_bytes / 1e6:,.1f} MB"


def _health(s: PgdrSettings, conninfo: str) -> tuple[bool, str]:
    health = check_database_health(conninfo, pool_settings(s).settings)
    return health.healthy, (f"{health.latency_ms} ms" if health.healthy else str(health.error))


def _integrity(conninfo: str) -> tuple[bool, str]:
    report = run_check(conninfo, load_profile("convoai"))
    counts = report.counts()
    return counts["critical"] == 0, (
        f"{counts['critical']} critical, {counts['warning']} warnings, {counts['info']} info"
    )


def _backup(s: PgdrSettings, conninfo: str) -> tuple[bool, str]:
    repo = open_repository(s)
    manifest = take_backup(repo, conninfo, label="pgdr demo")
    if repo.key_note:
        err_console.print(f"[yellow]{repo.key_note}[/]")
    verified = verify_backup(repo, manifest.id)
    detail = (
        f"{manifest.id} in {repo.url}: {len(manifest.files)} files, "
        f"{len(manifest.chunks)} encrypted chunks, read back "
        + ("clean" if verified.ok else "DAMAGED: " + "; ".join(verified.problems))
    )
    return verified.ok, detail


def _drill(s: PgdrSettings, name: str) -> tuple[bool, str]:
    report = run_drill(name, s, DrillOptions())
    rpo = report.rpo
    if report.rto_s is None or not rpo:
        return False, "; ".join(report.issues) or "no measurement"
    detail = (
        f"RTO {report.rto_s:.1f} s, RPO {rpo['missing_ticks']} of "
        f"{rpo['acknowledged_ticks']} acknowledged commits lost ({rpo['seconds']} s)"
    )
    return report.passed, detail


def _drill_step(s: PgdrSettings, name: str) -> Callable[[], tuple[bool, str]]:
    return lambda: _drill(s, name)


def demo(
    scale: Annotated[float, typer.Option(help="Sample scale for the first load.")] = 0.1,
    no_drills: Annotated[
        bool, typer.Option("--no-drills", help="Skip the disaster rehearsals.")
    ] = False,
) -> None:
    """The runbook end to end: database, sample, health, integrity, backup, three disasters."""
    s = settings()
    steps: list[DemoStep] = []
    _timed(steps, "Start the embedded database", lambda: _start(s))
    conninfo = default_cluster(s).conninfo()
    _timed(steps, "Load the ConvoAI sample", lambda: _sample(conninfo, scale))
    _timed(steps, "Health check", lambda: _health(s, conninfo))
    _timed(steps, "Integrity check", lambda: _integrity(conninfo))
    _timed(steps, "Encrypted base backup, read back", lambda: _backup(s, conninfo))
    if not no_drills:
        for name in SCENARIOS:
            _timed(steps, f"Disaster drill {name}", _drill_step(s, name))
    table = Table(title="pgdr demo")
    for column in ("step", "result", "seconds", "detail"):
        table.add_column(column)
    for step in steps:
        result = "[green]ok[/]" if step.ok else "[red]failed[/]"
        table.add_row(step.name, result, f"{step.seconds:.1f}", step.detail)
    console.print(table)
    failed = [step.name for step in steps if not step.ok]
    if failed:
        raise CheckFailed(f"The demo found problems in: {', '.join(failed)}.")
