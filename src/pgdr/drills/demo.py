"""``pgdr demo``: the README's main job, the runbook end to end on the embedded default.

Starts the embedded database, loads the ConvoAI sample (once), checks health and integrity,
takes an encrypted base backup into the default repository and reads it back, then rehearses the
runbook's three disasters in sandboxes of their own and reports measured RTO and RPO. The
embedded database itself is never harmed: the disasters happen to sandbox copies. Every step
runs even when an earlier one failed, so the report shows all that works and all that does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from pgdr.backup import open_repository
from pgdr.backup.take import take_backup
from pgdr.backup.verify import verify_backup
from pgdr.cluster import choose_installation, default_cluster
from pgdr.config import PgdrSettings
from pgdr.config.pool_settings import load_pool_settings
from pgdr.core.connect import connect
from pgdr.core.log import logger
from pgdr.drills.detect import MonitorFactory
from pgdr.drills.scenarios import SCENARIOS, DrillOptions, run_drill
from pgdr.integrity import run_check
from pgdr.pool import check_database_health
from pgdr.profile import load_profile
from pgdr.sample import load_sample, scale_counts

log = logger(__name__)
Outcome = tuple[bool, str]
Progress = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]


@dataclass
class DemoStep:
    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class DemoHooks:
    """How the front door shows the run: a step starting, a step done, a progress bar."""

    started: Callable[[str], None]
    finished: Callable[[DemoStep], None]
    progress: Progress
    monitor: MonitorFactory | None = None  # pgdr's monitor for the drills (pgdr.watch's)


def run_demo(s: PgdrSettings, scale: float, drills: bool, hooks: DemoHooks) -> list[DemoStep]:
    """Run every step of the demo; the steps, each ok or not, in order."""
    steps: list[DemoStep] = []

    def step(name: str, work: Callable[[], Outcome]) -> None:
        hooks.started(name)
        began = time.monotonic()
        ok, detail = work()
        done = DemoStep(name, ok, detail, round(time.monotonic() - began, 1))
        steps.append(done)
        hooks.finished(done)

    step("Start the embedded database", lambda: _start(s))
    conninfo = default_cluster(s).conninfo()
    step("Load the ConvoAI sample", lambda: _sample(conninfo, scale, hooks.progress))
    step("Health check", lambda: _health(s, conninfo))
    step("Integrity check", lambda: _integrity(conninfo))
    step("Encrypted base backup, read back", lambda: _backup(s, conninfo))
    if drills:
        for name in SCENARIOS:
            step(f"Disaster drill {name}", _drill_step(s, name, hooks.monitor))
    return steps


def _has_sample(conninfo: str) -> bool:
    with connect(conninfo) as conn:
        row = conn.execute("SELECT to_regclass('public.embeddings') IS NOT NULL").fetchone()
        return bool(row and row[0])


def _start(s: PgdrSettings) -> Outcome:
    cluster = default_cluster(s)
    if not cluster.exists:
        cluster.create(choose_installation(s.pg_bin, s.pg_version))
    cluster.start()
    return True, f"PostgreSQL {cluster.status().version} at {cluster.conninfo()}"


def _sample(conninfo: str, scale: float, progress: Progress) -> Outcome:
    if _has_sample(conninfo):
        return True, "the ConvoAI sample is already loaded"
    with progress("Loading ConvoAI sample", sum(scale_counts(scale).values())) as advance:
        report = load_sample(conninfo, scale=scale, progress=lambda _t, n: advance(n))
    rows = sum(report.rows.values())
    return True, f"{rows:,} rows, {report.database_bytes / 1e6:,.1f} MB"


def _health(s: PgdrSettings, conninfo: str) -> Outcome:
    health = check_database_health(conninfo, load_pool_settings(s).settings)
    return health.healthy, (f"{health.latency_ms} ms" if health.healthy else str(health.error))


def _integrity(conninfo: str) -> Outcome:
    report = run_check(conninfo, load_profile("convoai"))
    counts = report.counts()
    return counts["critical"] == 0, (
        f"{counts['critical']} critical, {counts['warning']} warnings, {counts['info']} info"
    )


def _backup(s: PgdrSettings, conninfo: str) -> Outcome:
    repo = open_repository(s)
    manifest = take_backup(repo, conninfo, label="pgdr demo")
    if repo.key_note:
        log.warning(repo.key_note)
    verified = verify_backup(repo, manifest.id)
    detail = (
        f"{manifest.id} in {repo.url}: {len(manifest.files)} files, "
        f"{len(manifest.chunks)} encrypted chunks, read back "
        + ("clean" if verified.ok else "DAMAGED: " + "; ".join(verified.problems))
    )
    return verified.ok, detail


def _drill(s: PgdrSettings, name: str, monitor: MonitorFactory | None) -> Outcome:
    report = run_drill(name, s, DrillOptions(), monitor=monitor)
    rpo = report.rpo
    if report.rto_s is None or not rpo:
        return False, "; ".join(report.issues) or "no measurement"
    detect = report.facts.get("detection", {}).get("seconds")
    detail = (
        f"RTO {report.rto_s:.1f} s (detected after {detect} s), RPO {rpo['missing_writes']} of "
        f"{rpo['acknowledged_writes']} acknowledged writes lost ({rpo['seconds']} s)"
    )
    return report.passed, detail


def _drill_step(
    s: PgdrSettings, name: str, monitor: MonitorFactory | None
) -> Callable[[], Outcome]:
    return lambda: _drill(s, name, monitor)
