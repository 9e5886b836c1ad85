"""What every scenario works with: the drill, pgdr's monitor over the sandbox, detection, the
decision taken from the incident, restores into the sandbox, verification and the data loss.

Every step after the preparation names its phase of the incident's timeline (disaster,
detection, decision, restore, verification); :func:`phase_seconds` sums them for the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgdr.cluster import LocalCluster
from pgdr.core.errors import CheckFailed
from pgdr.drills.detect import INTERVAL_S, Detection, MonitorFactory, SandboxWatch, WatchTarget
from pgdr.drills.report import RPO_TARGET_S, RTO_TARGET_S, DrillReport
from pgdr.drills.sandbox import Sandbox
from pgdr.drills.timebox import phase_times
from pgdr.drills.workload import WorkloadWriter, count_loss
from pgdr.incident.store import IncidentLog
from pgdr.integrity import CheckOptions, Report, run_check
from pgdr.integrity.snapshot import compare_snapshot
from pgdr.monitoring.checks import check_up
from pgdr.pool.health import check_database_health
from pgdr.profile import Profile
from pgdr.restore.target import Target

DETECTION_TIMEOUT_S = 60.0
# pgdr's action for each check that detects a disaster, most serious first
ACTIONS = {
    "database_up": "restore-latest",
    "integrity": "repair-tables",
    "rows_fell": "undelete",
}
ACTION_TEXT = {
    "restore-latest": "restore everything up to the latest WAL into a new cluster",
    "repair-tables": "repair the damaged tables in production from a copy restored to just "
    "before the first damaging transaction (option B)",
    "undelete": "put back the deleted rows from a copy restored to just before the deleting "
    "transaction",
}


@dataclass(frozen=True)
class DrillOptions:
    scale: float = 0.02
    pg_version: int = 18
    keep: bool = False
    run_id: str | None = None
    inject: str | None = None  # a fault to rehearse: "streamer-down"
    rto_target_s: float = RTO_TARGET_S
    rpo_target_s: float = RPO_TARGET_S
    monitor_interval_s: float = INTERVAL_S  # the sandbox's monitor (production: 120 s)
    disaster_delay_s: float = 0.0  # a wait under load before the disaster (drill run --random)


@dataclass
class Drill:
    """What every scenario works with."""

    sandbox: Sandbox
    report: DrillReport
    options: DrillOptions
    profile: Profile
    monitor: MonitorFactory | None = None
    watch: SandboxWatch | None = None
    disaster_at: float = 0.0  # wall clock
    disaster_mono: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def writer(self) -> WorkloadWriter:
        assert self.sandbox.writer is not None
        return self.sandbox.writer

    def disaster(self) -> None:
        """Mark the moment of the disaster (RTO and detection are measured from it)."""
        self.disaster_at = time.time()
        self.disaster_mono = time.monotonic()

    def finish(self) -> None:
        """RTO: from the disaster to the verified recovery, by the clock."""
        self.report.rto_s = time.monotonic() - self.disaster_mono


def summary(report: Report) -> list[str]:
    return [f"{f.priority} {f.severity}: {f.message}" for f in report.ordered()]


def watch_sandbox(d: Drill) -> None:
    """Start pgdr's monitor over the sandbox and wait for its first clean round."""
    sb, r = d.sandbox, d.report
    interval = d.options.monitor_interval_s
    with r.step(
        f"Watch: pgdr's monitor every {interval:g} s (production: every 2 minutes)",
        f"pgdr monitor run --interval {interval:g}",
    ) as step:
        assert d.monitor is not None  # run_drill refuses to run without it
        target = WatchTarget(
            sb.settings, sb.url, sb.records, lambda: sb.repo, d.profile, sb.env(), interval
        )
        d.watch = SandboxWatch(d.monitor(target))
        began = time.time()
        d.watch.start()
        clean = d.watch.wait_clean(began, max(DETECTION_TIMEOUT_S, 10 * interval))
        if clean is None:
            raise CheckFailed(
                "pgdr's monitor found no clean round before the disaster: "
                + "; ".join(d.watch.errors[-1:] or ["the detecting checks kept failing"])
            )
        step.detail = f"clean round at {datetime.fromtimestamp(clean.began).isoformat()}"


def detect(d: Drill) -> Detection:
    """The detection step: until pgdr's monitor opens an incident about the disaster."""
    r, watch = d.report, d.watch
    assert watch is not None
    with r.step(
        "Detect: pgdr's monitor opens an incident", "pgdr monitor run", phase="detection"
    ) as step:
        found = watch.wait_incident(d.disaster_at, max(DETECTION_TIMEOUT_S, 10 * watch.interval_s))
        watch.stop(join=False)  # detection is done; the round in progress ends by itself
        if found is None:
            raise CheckFailed("pgdr's monitor opened no incident after the disaster.")
        incident = found.incident
        r.facts["detection"] = found.as_dict()
        r.facts["incident_severity"] = incident.severity
        r.findings.append(
            f"{incident.severity} incident opened by the monitor after {found.detected_s:.1f} s "
            f"({incident.check}): {incident.message}"
        )
        step.detail = (
            f"{incident.severity} {', '.join(found.checks)} after {found.detected_s:.1f} s"
        )
    return found


def decide(d: Drill, found: Detection, expected: str) -> str:
    """The decision step: pgdr's action for the most serious check that opened an incident."""
    r = d.report
    with r.step("Decide the recovery from the incident", phase="decision") as step:
        action = next((ACTIONS[c] for c in ACTIONS if c in found.checks), None)
        if action is None:
            raise CheckFailed(
                f"pgdr has no recovery for the incident(s) {', '.join(found.checks)}."
            )
        r.facts["decision"] = {"action": action, "because": found.checks}
        step.detail = f"{action}: {ACTION_TEXT[action]}"
        if action != expected:
            r.fail(step, f"pgdr chose {action}; the disaster needed {expected}")
            raise CheckFailed(f"pgdr chose {action}; the disaster needed {expected}.")
    return action


def restore_into(
    d: Drill, target: Target, streamed_since: float, role: str, title: str, command: str
) -> LocalCluster:
    """A point-in-time restore step: wait until the WAL up to ``streamed_since`` is safe,
    restore to ``target`` into a new sandbox cluster named ``role``."""
    with d.report.step(title, command, phase="restore") as step:
        d.sandbox.wait_streamed(since=streamed_since)
        cluster, result = d.sandbox.restore(target, role)
        step.detail = f"recovered to {result.recovered_to_time}"
    return cluster


def verify(d: Drill, url: str, baseline: dict[str, Any], who: str, health: bool = True) -> None:
    """The runbook's "Verify Restoration" (via the snapshot), ``pgdr check``, health."""
    r = d.report
    env = f"DATABASE_URL=<{who}> " if who != "production" else ""
    with r.step(
        "Verify restoration: newest created_at and counts per table against the snapshot",
        f"{env}pgdr check compare {baseline['id']}",
        phase="verification",
    ) as step:
        compared = compare_snapshot(url, baseline, d.profile)
        if compared.critical:
            r.findings.extend(summary(compared))
            r.fail(step, f"{compared.critical} critical difference(s) from the snapshot")
        else:
            step.detail = "every table has its rows and newest row of the snapshot"
    with r.step(
        "Verify integrity: no critical findings", f"{env}pgdr check", phase="verification"
    ) as step:
        checked = run_check(url, d.profile, CheckOptions())
        if checked.critical:
            r.findings.extend(summary(checked))
            r.fail(step, f"{checked.critical} critical finding(s) remain")
        else:
            step.detail = f"{checked.counts()['warning']} warning(s), no critical finding"
    if health:
        _health(d, url, env)


def _health(d: Drill, url: str, env: str) -> None:
    r = d.report
    with r.step(
        "Health check of the recovered server", f"{env}pgdr health", phase="verification"
    ) as step:
        report = check_database_health(url)
        IncidentLog(d.sandbox.records / "incidents").update([check_up(report)])
        if not report.healthy:
            r.fail(step, f"unhealthy: {report.error}")
        else:
            step.detail = f"healthy, {report.latency_ms} ms"


def loss(d: Drill, url: str) -> None:
    """RPO: the acknowledged writes missing from (or reverted in) ``url``, per table."""
    d.writer.stop()
    counted = count_loss(url, d.writer.snapshot())
    d.report.rpo = counted.as_dict()
    d.report.loss = counted
    d.report.facts["workload_failures"] = d.writer.failures
    if counted.missing:
        where = ", ".join(f"{t} {n['missing']}" for t, n in counted.tables.items() if n["missing"])
        d.report.findings.append(
            f"{counted.missing} acknowledged write(s) missing or reverted after recovery "
            f"({where}), spanning {counted.seconds:.3f} s."
        )


def phase_seconds(report: DrillReport) -> dict[str, float]:
    """Seconds spent in each phase of the incident's timeline, as the HTML report's time boxes
    measure them (steps of the phase summed; detection timed from the disaster)."""
    return {p.phase: round(p.measured_s, 3) for p in phase_times(report.as_dict())}
