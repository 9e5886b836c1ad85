"""The runbook's three disaster scenarios, each run end to end in its own sandbox.

Before each disaster pgdr's own monitor (:mod:`pgdr.drills.detect`) watches the sandbox; the
detection ends when it opens an incident, and pgdr decides the recovery from that incident:

1. **Complete database loss**: kill -9 the server and delete its data directory while the
   workload writes; the monitor's ``database_up`` check opens a P0 incident; point-in-time
   restore ``--latest`` into a new cluster; verify against the snapshot, ``pgdr check`` and a
   health check.
2. **Data corruption** (:mod:`pgdr.drills.scenario2`): orphans (parents deleted with
   ``session_replication_role = replica``) and missing vectors; the monitor's ``integrity``
   check opens the incident; the damaged tables come from its findings, the recovery point from
   the WAL of the window its rounds bound; restore to just before that transaction into a new
   cluster (option A, verified, its corruption window counted), then repair the damaged tables
   in production from that copy (option B, the choice).
3. **Accidental deletion** (:mod:`pgdr.drills.scenario3`): a chatbot and everything under it
   deleted; the monitor's ``rows_fell`` check opens the incident; read-only mode on; ``wal
   find`` names the deleting transaction; restore to just before it into a scratch cluster; put
   back the rows missing from production (``pgdr recover rows``); read-only off.

RTO runs from the disaster to the verified recovery, detection and decision included; RPO is
the acknowledged workload writes (ticks and the application's tables) missing or reverted
afterwards (count per table and seconds). Operator commands are recorded with every step.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from pgdr.cluster import find_installations
from pgdr.config import PgdrSettings
from pgdr.core.errors import ConfigError, PgdrError
from pgdr.core.records import RecordStore
from pgdr.drills import scenario2 as s2
from pgdr.drills import scenario3 as s3
from pgdr.drills.common import (
    Drill,
    DrillOptions,
    decide,
    detect,
    loss,
    phase_seconds,
    restore_into,
    verify,
    watch_sandbox,
)
from pgdr.drills.detect import MonitorFactory
from pgdr.drills.html import write_drill_html
from pgdr.drills.report import DrillReport, save_report
from pgdr.drills.sandbox import DATABASE, Sandbox
from pgdr.integrity import CheckOptions, run_check
from pgdr.integrity.snapshot import take_snapshot
from pgdr.profile import load_profile
from pgdr.restore.target import Target

__all__ = ["FAULTS", "SCENARIOS", "DrillOptions", "run_drill"]

FAULTS = ("streamer-down",)
SAMPLE_PROFILE = "convoai"  # the sandbox holds the ConvoAI sample, whatever PGDR_PROFILE says
TITLES = {
    "scenario1": "Complete database loss",
    "scenario2": "Data corruption",
    "scenario3": "Accidental data deletion",
}


def _prepare(d: Drill) -> dict[str, Any]:
    """The production database, streaming, a base backup, the workload, a snapshot."""
    sb, r = d.sandbox, d.report
    with r.step(
        "Prepare the sandbox: production cluster with the ConvoAI sample, repository and key",
        f"pgdr db start --pg-version {d.options.pg_version}",
        f"pgdr sample load --scale {d.options.scale:g}",
    ):
        sb.create()
    with r.step("Stream WAL into the repository", "pgdr wal stream"):
        sb.start_streamer()
        sb.wait_streamed()
    with r.step("Take a base backup", "pgdr backup"):
        manifest = sb.backup()
        r.facts["backup_id"] = manifest.id
    with r.step(
        "Start the workload writer (ticks and application writes, each recorded once acknowledged)"
    ):
        sb.start_workload()
    with r.step(
        "Snapshot the runbook's verification figures: counts and newest created_at per table",
        "pgdr check snapshot",
    ) as step:
        baseline = take_snapshot(sb.url, d.profile)
        RecordStore.at(sb.records / "snapshots", "snapshot").save(baseline)
        r.facts["snapshot_id"] = baseline["id"]
        before = run_check(sb.url, d.profile, CheckOptions())
        if before.critical:
            r.fail(step, f"the production database had {before.critical} critical finding(s)")
        d.writer.wait_for_ticks(20)
    if d.options.disaster_delay_s > 0:
        with r.step(f"Wait {d.options.disaster_delay_s:.2f} s under load: a random moment"):
            time.sleep(d.options.disaster_delay_s)
    return baseline


def scenario1(d: Drill) -> None:
    """Complete database loss."""
    sb, r = d.sandbox, d.report
    baseline = _prepare(d)
    watch_sandbox(d)
    d.writer.wait_for_ticks(50)  # a couple of seconds of workload before the disaster
    if d.options.inject == "streamer-down":
        with r.step(
            "Injected fault: the WAL streamer stops while the workload goes on",
            "systemctl stop pgdr-wal-stream",
        ):
            sb.stop_streamer()
            d.writer.wait_for_ticks(50)
    with r.step(
        "Disaster: kill -9 the server and delete its data directory mid-workload",
        "kill -9 $(head -1 $PGDATA/postmaster.pid)",
        "rm -rf $PGDATA",
        phase="disaster",
    ):
        d.disaster()
        r.facts["disaster_at"] = datetime.now(UTC).isoformat()
        sb.production.kill()
        shutil.rmtree(sb.production.data_dir)
    decide(d, detect(d), "restore-latest")
    r.facts["recovery_point"] = {
        "how": "the end of the archived WAL (the server is gone: everything it streamed)",
        "target": "--latest",
    }
    with r.step(
        "Recover: point-in-time restore of the latest WAL into a new cluster",
        "pgdr restore --latest --new-cluster",
        phase="restore",
    ) as step:
        cluster, result_ = sb.restore(Target("latest"), "recovered")
        sb.stop_streamer()  # it streamed the lost server; the new one needs its own
        step.detail = (
            f"backup {result_.backup_id}, {result_.segments_fetched} WAL segment(s), recovered "
            f"to {result_.recovered_to_time}"
        )
        r.facts["recovered_to_time"] = result_.recovered_to_time
    url = cluster.conninfo(DATABASE)
    verify(d, url, baseline, "new server")
    d.finish()
    loss(d, url)


def scenario2(d: Drill) -> None:
    """Data corruption: orphans and broken embeddings, repaired from a copy restored to just
    before the first damaging transaction."""
    baseline = _prepare(d)
    watch_sandbox(d)  # the workload wrote meanwhile (and since the snapshot)
    streamed_since = s2.corrupt(d)
    found = detect(d)
    decide(d, found, "repair-tables")
    target, damaged = s2.find_recovery_point(d, found)
    cluster = restore_into(
        d,
        target,
        streamed_since,
        "recovered",
        "Restore the database as it was just before the corruption into a new cluster "
        "(option A's new production, option B's source)",
        f"pgdr restore --target-xid {target.value} --exclusive --new-cluster",
    )
    url = cluster.conninfo(DATABASE)
    verify(d, url, baseline, "copy")
    window = s2.option_a(d, url)
    s2.repair(d, url, damaged)
    verify(d, d.sandbox.url, baseline, "production", health=False)
    d.finish()
    s2.choice(d, window)
    with d.report.step("The workload still writes"):
        d.writer.wait_for_ticks(10)
    loss(d, d.sandbox.url)


def scenario3(d: Drill) -> None:
    """Accidental deletion of a chatbot and everything under it."""
    sb, r = d.sandbox, d.report
    baseline = _prepare(d)
    watch_sandbox(d)
    chatbot = s3.busiest_chatbot(sb.url)
    r.facts["chatbot"] = chatbot
    streamed_since = s3.delete_chatbot(d, chatbot)
    found = detect(d)
    decide(d, found, "undelete")
    s3.read_only(d, True)
    table, target = s3.find_deletion(d, found)
    scratch = restore_into(
        d,
        target,
        streamed_since,
        "scratch",
        "Restore to just before the deleting transaction into a scratch cluster",
        f"pgdr restore --target-xid {target.value} --exclusive --new-cluster",
    )
    s3.put_back(d, scratch.conninfo(DATABASE), table)
    s3.read_only(d, False)
    verify(d, sb.url, baseline, "production", health=False)
    d.finish()
    with r.step("The workload writes again"):
        d.writer.wait_for_ticks(10)
    loss(d, sb.url)


SCENARIOS: dict[str, Callable[[Drill], None]] = {
    "scenario1": scenario1,
    "scenario2": scenario2,
    "scenario3": scenario3,
}


def _check_request(name: str, options: DrillOptions) -> None:
    """Refuse an unknown scenario or fault, or a PostgreSQL version that is not installed."""
    if name not in SCENARIOS:
        raise ConfigError(f"Unknown drill {name!r}: choose {', '.join(SCENARIOS)} or all.")
    if options.inject is not None and options.inject not in FAULTS:
        raise ConfigError(f"Unknown fault {options.inject!r}: choose {', '.join(FAULTS)}.")
    if options.inject is not None and name != "scenario1":
        raise ConfigError("--inject applies to scenario1 only.")
    if not any(i.major == options.pg_version for i in find_installations()):
        raise ConfigError(
            f"PostgreSQL {options.pg_version} is not installed; a drill needs it for its "
            "sandbox (see docs/embedded-database.md)."
        )


def run_drill(
    name: str,
    settings: PgdrSettings,
    options: DrillOptions,
    on_step: Callable[[str], None] | None = None,
    monitor: MonitorFactory | None = None,
) -> DrillReport:
    """Run one scenario in a fresh sandbox, always clean up, record and return the report.

    ``monitor`` builds pgdr's monitor over the sandbox (:func:`pgdr.watch.drill_monitor`; the
    watch layer sits above the drills, so its callers hand it in); without it a drill could not
    detect its disaster, and none is run."""
    if monitor is None:
        raise ConfigError("A drill needs pgdr's monitor: pass monitor=pgdr.watch.drill_monitor.")
    _check_request(name, options)
    report = DrillReport(
        name,
        TITLES[name],
        options.pg_version,
        options.scale,
        run_id=options.run_id,
        rto_target_s=options.rto_target_s,
        rpo_target_s=options.rpo_target_s,
        listener=on_step,
    )
    if options.inject:
        report.facts["injected_fault"] = options.inject
    if options.disaster_delay_s:
        report.facts["disaster_delay_s"] = round(options.disaster_delay_s, 3)
    sandbox = Sandbox(settings, report.id, options.pg_version, options.scale)
    report.sandbox = str(sandbox.root)
    drill = Drill(sandbox, report, options, load_profile(SAMPLE_PROFILE), monitor)
    try:
        SCENARIOS[name](drill)
        report.verified = not report.issues
    except PgdrError as exc:
        report.issues.append(exc.message)
    except (psycopg.Error, OSError, TimeoutError) as exc:
        report.issues.append(f"{type(exc).__name__}: {str(exc).strip() or 'no detail'}")
    finally:
        if drill.watch is not None:
            drill.watch.stop()
        report.facts["phases"] = phase_seconds(report)
        sandbox.close(options.keep)
        report.kept = options.keep
        report.finished_at = datetime.now(UTC).isoformat()
    try:
        write_drill_html(settings.home, report.as_dict())
    except (OSError, ConfigError) as exc:
        report.issues.append(f"The HTML report could not be written: {exc}")
    save_report(settings.home, report)
    return report
