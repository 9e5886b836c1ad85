"""The runbook's three disaster scenarios, each run end to end in its own sandbox.

1. **Complete database loss**: kill -9 the server and delete its data directory while the
   workload writes; the health check fails (P0 incident); point-in-time restore ``--latest``
   into a new cluster; verify against the snapshot, ``pgdr check`` and a health check.
2. **Data corruption**: orphans (parents deleted with ``session_replication_role = replica``)
   and missing vectors; ``pgdr check`` finds them; the database is restored to the moment T
   before the corruption into a new cluster (option A, verified, its corruption window
   counted), then the damaged tables are repaired in production from that copy (option B, the
   choice: nothing written after T is lost).
3. **Accidental deletion**: a chatbot and everything under it deleted; ``pgdr check compare``
   sees counts fall; read-only mode on; restore to just before the deletion into a scratch
   cluster; put back exactly the deleted rows (``pgdr recover rows``); read-only off.

RTO runs from the disaster to the verified recovery; RPO is the acknowledged workload commits
missing afterwards (count and seconds). Operator commands are recorded with every step.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from pgdr.cluster import LocalCluster, find_installations
from pgdr.config import PgdrSettings
from pgdr.core.connect import connect
from pgdr.core.errors import ConfigError, PgdrError
from pgdr.core.records import RecordStore
from pgdr.drills.html import write_drill_html
from pgdr.drills.report import RPO_TARGET_S, RTO_TARGET_S, DrillReport, save_report
from pgdr.drills.sandbox import DATABASE, Sandbox
from pgdr.drills.workload import LossCount, WorkloadWriter, count_loss
from pgdr.incident.readonly import Scope, set_read_only
from pgdr.incident.store import IncidentLog
from pgdr.integrity import CheckOptions, Report, run_check
from pgdr.integrity.snapshot import compare_snapshot, take_snapshot
from pgdr.monitoring.checks import check_up
from pgdr.pool.health import check_database_health
from pgdr.profile import Profile, load_profile
from pgdr.restore.pitr import Target
from pgdr.restore.rows import recover_rows, repair_tables

FAULTS = ("streamer-down",)
SAMPLE_PROFILE = "convoai"  # the sandbox holds the ConvoAI sample, whatever PGDR_PROFILE says
TITLES = {
    "scenario1": "Complete database loss",
    "scenario2": "Data corruption",
    "scenario3": "Accidental data deletion",
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
    disaster_delay_s: float = 0.0  # a wait under load before the disaster (drill run --random)


@dataclass
class Drill:
    """What every scenario works with."""

    sandbox: Sandbox
    report: DrillReport
    options: DrillOptions
    profile: Profile

    @property
    def writer(self) -> WorkloadWriter:
        assert self.sandbox.writer is not None
        return self.sandbox.writer


def _server_now(url: str) -> datetime:
    with connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment


def _summary(report: Report) -> list[str]:
    return [f"{f.priority} {f.severity}: {f.message}" for f in report.ordered()]


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
    with r.step("Start the workload writer (one tick per commit, acknowledged ticks recorded)"):
        sb.start_workload()
    with r.step(
        "Snapshot the runbook's verification figures: counts and newest created_at per table",
        "pgdr check snapshot",
    ) as step:
        baseline = take_snapshot(sb.url, d.profile)
        RecordStore(sb.records, "snapshot").save(baseline)
        r.facts["snapshot_id"] = baseline["id"]
        before = run_check(sb.url, d.profile, CheckOptions())
        if before.critical:
            r.fail(step, f"the production database had {before.critical} critical finding(s)")
        d.writer.wait_for_ticks(20)
    if d.options.disaster_delay_s > 0:
        with r.step(f"Wait {d.options.disaster_delay_s:.2f} s under load: a random moment"):
            time.sleep(d.options.disaster_delay_s)
    return baseline


def _verify(d: Drill, url: str, baseline: dict[str, Any], who: str, health: bool = True) -> None:
    """The runbook's "Verify Restoration" (via the snapshot), ``pgdr check``, health."""
    r = d.report
    env = f"DATABASE_URL=<{who}> " if who != "production" else ""
    with r.step(
        "Verify restoration: newest created_at and counts per table against the snapshot",
        f"{env}pgdr check compare {baseline['id']}",
    ) as step:
        compared = compare_snapshot(url, baseline, d.profile)
        if compared.critical:
            r.findings.extend(_summary(compared))
            r.fail(step, f"{compared.critical} critical difference(s) from the snapshot")
        else:
            step.detail = "every table has its rows and newest row of the snapshot"
    with r.step("Verify integrity: no critical findings", f"{env}pgdr check") as step:
        checked = run_check(url, d.profile, CheckOptions())
        if checked.critical:
            r.findings.extend(_summary(checked))
            r.fail(step, f"{checked.critical} critical finding(s) remain")
        else:
            step.detail = f"{checked.counts()['warning']} warning(s), no critical finding"
    if not health:
        return
    with r.step("Health check of the recovered server", f"{env}pgdr health") as step:
        report = check_database_health(url)
        IncidentLog(d.sandbox.records / "incidents").update([check_up(report)])
        if not report.healthy:
            r.fail(step, f"unhealthy: {report.error}")
        else:
            step.detail = f"healthy, {report.latency_ms} ms"


def _loss(d: Drill, url: str) -> None:
    d.writer.stop()
    loss = count_loss(url, d.writer.snapshot())
    d.report.rpo = loss.as_dict()
    d.report.loss = loss
    d.report.facts["workload_failures"] = d.writer.failures
    if loss.missing:
        d.report.findings.append(
            f"{loss.missing} acknowledged commit(s) missing after recovery, spanning "
            f"{loss.seconds:.3f} s."
        )


def _restore_at(
    d: Drill, moment: datetime, streamed_since: float, role: str, title: str
) -> LocalCluster:
    """A point-in-time restore step: wait until the WAL up to now is safe, restore to
    ``moment`` into a new sandbox cluster named ``role``, and record what was recovered."""
    with d.report.step(
        title, f"pgdr restore --target-time {moment.isoformat()} --new-cluster"
    ) as step:
        d.sandbox.wait_streamed(since=streamed_since)
        cluster, result = d.sandbox.restore(Target("time", moment.isoformat()), role)
        step.detail = f"recovered to {result.recovered_to_time}"
    return cluster


def scenario1(d: Drill) -> None:
    """Complete database loss."""
    sb, r = d.sandbox, d.report
    baseline = _prepare(d)
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
    ):
        disaster = time.monotonic()
        r.facts["disaster_at"] = datetime.now(UTC).isoformat()
        sb.production.kill()
        shutil.rmtree(sb.production.data_dir)
    with r.step(
        "Detect: the health check fails and opens a P0 incident", "pgdr health", "pgdr monitor run"
    ) as step:
        health = check_database_health(sb.url)
        result = check_up(health)
        opened = IncidentLog(sb.records / "incidents").update([result])
        if health.healthy:
            r.fail(step, "the health check still passes after the server was destroyed")
        else:
            severity = opened[0].severity if opened else result.severity
            step.detail = f"{severity}: {result.message}"
            r.findings.append(f"{severity} incident opened: {result.message}")
            r.facts["incident_severity"] = str(severity)
    with r.step(
        "Recover: point-in-time restore of the latest WAL into a new cluster",
        "pgdr restore --latest --new-cluster",
    ) as step:
        cluster, result_ = sb.restore(Target("latest"), "recovered")
        sb.stop_streamer()  # it streamed the lost server; the new one needs its own
        step.detail = (
            f"backup {result_.backup_id}, {result_.segments_fetched} WAL segment(s), recovered "
            f"to {result_.recovered_to_time}"
        )
        r.facts["recovered_to_time"] = result_.recovered_to_time
    url = cluster.conninfo(DATABASE)
    _verify(d, url, baseline, "new server")
    r.rto_s = time.monotonic() - disaster
    _loss(d, url)


def scenario3(d: Drill) -> None:
    """Accidental deletion of a chatbot and everything under it."""
    sb, r = d.sandbox, d.report
    baseline = _prepare(d)
    chatbot = _busiest_chatbot(sb.url)
    r.facts["chatbot"] = chatbot
    before, disaster, streamed_since = _delete_chatbot(d, chatbot)
    _detect_fall(d, baseline)
    with r.step("Stop further writes: read-only mode on", "pgdr readonly on --terminate") as step:
        with connect(sb.url, autocommit=True) as conn:
            state = set_read_only(conn, True, Scope.DATABASE, terminate=True)
        step.detail = f"read-only; {state.terminated_sessions} session(s) ended"
    scratch = _restore_at(
        d,
        before,
        streamed_since,
        "scratch",
        "Identify the deletion time (the application's log) and restore to just before it "
        "into a scratch cluster",
    )
    with r.step(
        "Re-insert exactly the deleted rows from the scratch copy, parents first",
        "export SCRATCH_URL=<scratch server>",
        f"pgdr recover rows --from-env SCRATCH_URL --table chatbots --key {chatbot} "
        "--with-children",
    ) as step:
        rows = recover_rows(
            scratch.conninfo(DATABASE), sb.url, "chatbots", [chatbot], with_children=True
        )
        r.facts["rows_reinserted"] = {t.table: t.inserted for t in rows.tables}
        step.detail = ", ".join(f"{t.table} {t.inserted}" for t in rows.tables)
    with (
        r.step("Read-only mode off", "pgdr readonly off"),
        connect(sb.url, autocommit=True) as conn,
    ):
        set_read_only(conn, False, Scope.DATABASE)
    _verify(d, sb.url, baseline, "production", health=False)
    r.rto_s = time.monotonic() - disaster
    with r.step("The workload writes again"):
        d.writer.wait_for_ticks(10)
    _loss(d, sb.url)


def _busiest_chatbot(url: str) -> str:
    """The chatbot with the most conversations, embeddings and knowledge base rows."""
    with connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT c.id::text FROM chatbots c ORDER BY "
            "(SELECT count(*) FROM conversations v WHERE v.chatbot_id = c.id) + "
            "(SELECT count(*) FROM embeddings e WHERE e.chatbot_id = c.id) + "
            "(SELECT count(*) FROM knowledge_base k WHERE k.chatbot_id = c.id) DESC, c.id "
            "LIMIT 1"
        ).fetchone()
    assert row is not None
    return str(row[0])


def _delete_chatbot(d: Drill, chatbot: str) -> tuple[datetime, float, float]:
    """The disaster of scenario 3: the server's time just before it, the monotonic time of the
    disaster and the wall-clock time from which the WAL must be streamed."""
    r = d.report
    with r.step(
        "Disaster: a chatbot is deleted (cascading to its conversations, messages, embeddings "
        "and knowledge base) while the workload runs",
        f"DELETE FROM chatbots WHERE id = '{chatbot}'",
    ) as step:
        before = _server_now(d.sandbox.url)
        with connect(d.sandbox.url, autocommit=True) as conn:
            deleted = conn.execute("DELETE FROM chatbots WHERE id = %s", (chatbot,)).rowcount
        disaster = time.monotonic()
        streamed_since = time.time()
        r.facts["deleted_after"] = before.isoformat()
        step.detail = f"{deleted} chatbot deleted at {before.isoformat()}"
        d.writer.wait_for_ticks(20)
    return before, disaster, streamed_since


def _detect_fall(d: Drill, baseline: dict[str, Any]) -> None:
    r = d.report
    with r.step(
        "Detect: counts fell against the snapshot", f"pgdr check compare {baseline['id']}"
    ) as step:
        compared = compare_snapshot(d.sandbox.url, baseline, d.profile)
        fell = [f for f in compared.findings if f.check == "compare" and f.code == "rows_fell"]
        if not fell:
            r.fail(step, "the comparison did not notice the deletion")
        r.findings.extend(_summary(compared))
        r.facts["rows_deleted"] = {f.table: f.count for f in fell}
        step.detail = ", ".join(f"{f.table} -{f.count}" for f in fell)


def _damaged_tables(report: Report) -> list[str]:
    """The tables to repair: where rows went missing (an orphan's parent) or went bad."""
    tables: list[str] = []
    for f in report.ordered():
        if f.severity != "critical":
            continue
        table = f.details.get("parent") if f.details else None
        table = table or f.table
        if table and table not in tables:
            tables.append(str(table))
    return tables


def scenario2(d: Drill) -> None:
    """Data corruption: orphans and broken embeddings, repaired from a copy restored to T."""
    sb, r = d.sandbox, d.report
    baseline = _prepare(d)
    with r.step(
        "Record the last good moment T (the application's log)", "date -u +%FT%T.%6NZ"
    ) as step:
        good = _server_now(sb.url)
        r.facts["last_good_moment"] = good.isoformat()
        step.detail = good.isoformat()
        d.writer.wait_for_ticks(10)
    disaster, streamed_since = _corrupt(d)
    damaged = _detect_corruption(d)
    cluster = _restore_at(
        d,
        good,
        streamed_since,
        "recovered",
        "Restore the database as it was at T into a new cluster (option A's new production, "
        "option B's source)",
    )
    url = cluster.conninfo(DATABASE)
    _verify(d, url, baseline, "copy at T")
    option_a, window = _option_a(d, url, disaster)
    with r.step(
        "Recover (option B): repair only the damaged tables in production from the copy at T",
        "export COPY_URL=<copy at T>",
        "pgdr recover tables --from-env COPY_URL "
        + " ".join(f"--table {t.split('.')[-1]}" for t in damaged),
    ) as step:
        repaired = repair_tables(url, sb.url, damaged)
        r.facts["rows_repaired"] = {t.table: t.inserted for t in repaired}
        step.detail = ", ".join(f"{t.table} {t.inserted} row(s) put back" for t in repaired)
    _verify(d, sb.url, baseline, "production", health=False)
    r.rto_s = time.monotonic() - disaster
    r.facts["choice"] = (
        "Option B: the check names the damaged tables, so production is repaired in place "
        "from the copy restored to T and keeps everything written after T (no corruption "
        f"window to re-apply). Option A, the verified copy at T, was ready after "
        f"{option_a:.1f} s and stays the fallback when the damage cannot be confined to "
        f"tables; it would have lost the {window.missing} commit(s) made after T."
    )
    with r.step("The workload still writes"):
        d.writer.wait_for_ticks(10)
    _loss(d, sb.url)


def _corrupt(d: Drill) -> tuple[float, float]:
    """The disaster of scenario 2: its monotonic time and the wall-clock time from which the
    WAL must be streamed."""
    with d.report.step(
        "Disaster: corruption: parents deleted behind the foreign keys' back, vectors lost",
        "SET session_replication_role = replica; DELETE FROM users WHERE ...",
        "UPDATE embeddings SET embedding = NULL WHERE ...",
    ) as step:
        with connect(d.sandbox.url, autocommit=True) as conn, conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            users = conn.execute(
                "DELETE FROM users WHERE id IN (SELECT user_id FROM chatbots "
                "ORDER BY id LIMIT greatest(1, (SELECT count(*) FROM chatbots) / 20))"
            ).rowcount
            vectors = conn.execute(
                "UPDATE embeddings SET embedding = NULL WHERE id % 4 = 0"
            ).rowcount
        disaster = time.monotonic()
        streamed_since = time.time()
        step.detail = f"{users} user(s) deleted under their chatbots, {vectors} vectors lost"
        d.writer.wait_for_ticks(20)
    return disaster, streamed_since


def _detect_corruption(d: Drill) -> list[str]:
    """``pgdr check`` on production; the damaged tables it names."""
    r = d.report
    with r.step("Detect: pgdr check finds critical findings", "pgdr check") as step:
        checked = run_check(d.sandbox.url, d.profile, CheckOptions())
        if not checked.critical:
            r.fail(step, "the check did not find the corruption")
        r.findings.extend(_summary(checked))
        damaged = _damaged_tables(checked)
        r.facts["incident_severity"] = checked.top_priority
        r.facts["damaged_tables"] = damaged
        step.detail = (
            f"{checked.critical} critical finding(s), level {checked.top_priority}; damaged: "
            f"{', '.join(damaged)}"
        )
    return damaged


def _option_a(d: Drill, url: str, disaster: float) -> tuple[float, LossCount]:
    """Option A (switch to the verified copy at T at ``url``): when it was ready, and the
    acknowledged commits made after T that it would lose."""
    option_a = time.monotonic() - disaster
    window = count_loss(url, d.writer.snapshot())
    d.report.facts["option_a"] = {
        "rto_seconds": round(option_a, 3),
        "corruption_window": window.as_dict(),
    }
    d.report.findings.append(
        f"Option A (switch to the copy at T) was ready after {option_a:.1f} s, but "
        f"{window.missing} acknowledged commit(s) made after T ({window.seconds:.3f} s, and "
        "counting) would have to be re-applied."
    )
    return option_a, window


SCENARIOS: dict[str, Callable[[Drill], None]] = {
    "scenario1": scenario1,
    "scenario2": scenario2,
    "scenario3": scenario3,
}


def run_drill(
    name: str,
    settings: PgdrSettings,
    options: DrillOptions,
    on_step: Callable[[str], None] | None = None,
) -> DrillReport:
    """Run one scenario in a fresh sandbox, always clean up, record and return the report."""
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
    drill = Drill(sandbox, report, options, load_profile(SAMPLE_PROFILE))
    try:
        SCENARIOS[name](drill)
        report.verified = not report.issues
    except PgdrError as exc:
        report.issues.append(exc.message)
    except (psycopg.Error, OSError, TimeoutError) as exc:
        report.issues.append(f"{type(exc).__name__}: {str(exc).strip() or 'no detail'}")
    finally:
        sandbox.close(options.keep)
        report.kept = options.keep
        report.finished_at = datetime.now(UTC).isoformat()
    try:
        write_drill_html(settings.home, report.as_dict())
    except (OSError, ConfigError) as exc:
        report.issues.append(f"The HTML report could not be written: {exc}")
    save_report(settings.home, report)
    return report
