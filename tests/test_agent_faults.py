"""`pgdr agent` under faults: a clone under a second name, a database down at start, a
repository that cannot be written. The agent keeps running, says what is wrong (log and
`pgdr status`) and recovers by itself when the fault goes away.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from fixtures.agent import AgentEnv, agent_env, new_cluster
from fixtures.receivers import HttpReceiver
from pgdr.config import PgdrSettings
from pgdr.core.incidents import IncidentStore

TWO_NAMES = """
[agent]
drill_scenarios = ["scenario1"]
retry_base_s = 1
retry_max_s = 2
connect_retry_max_s = 1
stop_grace_s = 60
[repositories.primary]
url = "{root}/repo"
[databases.main]
url_env = "MAIN_URL"
wal = false
[databases.main.schedule]
full = "1h"
restore_test = "off"
uptime = "off"
drill = "15s"
[databases.clone]
url_env = "CLONE_URL"
wal = false
[databases.clone.schedule]
full = "1h"
restore_test = "off"
uptime = "off"
drill = "15s"
"""

FAULTS = """
[[contacts]]
name = "Olga"
role = "on-call"
channels = ["webhook:{hook}"]
[notify]
timeout_seconds = 2
[agent]
retry_base_s = 1
retry_max_s = 2
connect_retry_max_s = 1
stop_grace_s = 60
[repositories.primary]
url = "{root}/repo"
[repositories.blocked]
url = "{root}/blocker/repo"
[databases.down]
url_env = "DOWN_URL"
[databases.down.schedule]
full = "1h"
restore_test = "off"
uptime = "2s"
[databases.norepo]
url_env = "NOREPO_URL"
repositories = ["blocked"]
[databases.norepo.schedule]
full = "1h"
restore_test = "off"
uptime = "2s"
"""


def backups(a: AgentEnv, db: str) -> list[str]:
    return [e["summary"]["backup_id"] for e in a.events(db, "backup_full", "finished")]


@pytest.mark.timeout(600)
def test_two_names_for_one_cluster_are_refused(
    settings: PgdrSettings, tmp_path: Path, agent_procs: list[AgentEnv]
) -> None:
    cluster = new_cluster(settings, "twins")
    try:
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE other")
        a = agent_env(
            settings,
            tmp_path,
            TWO_NAMES,
            MAIN_URL=cluster.conninfo(),
            CLONE_URL=cluster.conninfo("other"),
        )
        agent_procs.append(a)
        proc = a.start()

        def one_refused() -> bool:
            try:
                states = [a.state(db).get("problem") or "" for db in ("main", "clone")]
            except (OSError, ValueError):
                return False
            return sum(s.startswith("Refused") for s in states) == 1 and any(
                backups(a, db) for db in ("main", "clone")
            )

        a.wait_for(one_refused, timeout=240, what="one name refused, the other backed up")
        code, report = a.status()
        refused = next(
            n for n, d in report["databases"].items() if (d["agent"] or {}).get("problem")
        )
        served = "clone" if refused == "main" else "main"
        assert report["databases"][refused]["state"] == "unprotected"
        assert "already configured as" in report["databases"][refused]["reasons"][-1]
        assert not backups(a, refused)
        assert backups(a, served)
        assert code == 2  # the worst database decides
        assert report["databases"][served]["last_drill"] is None
        # the drill job (a schedule of seconds, one scenario) runs for the served name only
        a.wait_for(
            lambda: bool(
                a.events(served, "drill", "finished") or a.events(served, "drill", "failed")
            ),
            timeout=300,
            what="the drill job",
        )
        (ran,) = a.events(served, "drill", "finished")
        assert ran["summary"]["scenarios"]["scenario1"]["passed"] is True
        assert not a.events(refused, "drill", "started")
        drill = a.status()[1]["databases"][served]["last_drill"]
        assert drill["passed"] is True and drill["scenarios"] == ["scenario1"]
        assert drill["id"] == ran["summary"]["run_id"] and drill["rto_s"] > 0
        assert drill["rpo_s"] is not None
        human = a.cli("status", "--db", served)
        assert "last drill" in human.stdout and "passed (scenario1)" in human.stdout
        assert a.stop(proc) == 0
    finally:
        cluster.destroy()


@pytest.mark.timeout(600)
def test_database_down_and_repository_unwritable_are_reported_and_retried(
    settings: PgdrSettings,
    tmp_path: Path,
    agent_procs: list[AgentEnv],
    http_receiver: HttpReceiver,
) -> None:
    """Also the agent's monitor rounds: the uptime check of a database that is down opens an
    incident in its store and notifies the webhook, and resolves when it is back; a job failing
    three times in a row is a P1 incident naming it and its error."""
    down = new_cluster(settings, "down")
    norepo = new_cluster(settings, "norepo")
    try:
        down.stop()
        (tmp_path / "blocker").write_text("a file where the repository's directory should be")
        a = agent_env(
            settings,
            tmp_path,
            FAULTS.replace("{hook}", http_receiver.url),
            DOWN_URL=down.conninfo(),
            NOREPO_URL=norepo.conninfo(),
        )
        agent_procs.append(a)
        proc = a.start()

        def both_reported() -> bool:
            try:
                problem = a.state("down").get("problem") or ""
            except (OSError, ValueError):
                return False
            return (
                "unreachable" in problem and len(a.events("norepo", "backup_full", "failed")) >= 2
            )

        a.wait_for(both_reported, timeout=180, what="the outage and the failing backups")
        assert proc.poll() is None  # the agent keeps running
        code, report = a.status()
        assert code == 2
        down_status = report["databases"]["down"]
        assert down_status["state"] == "unprotected"  # no backup yet
        assert "The database is unreachable, retrying" in down_status["agent"]["problem"]
        norepo_status = report["databases"]["norepo"]
        reasons = norepo_status["reasons"]
        assert norepo_status["state"] == "unprotected", reasons
        failing = [r for r in reasons if "backup_full job is failing" in r]
        assert failing and "blocker" in failing[0], reasons  # the storage's own sentence
        assert "unreachable, retrying" in a.log()
        # the monitor rounds: incidents in each database's own store, told to the webhook
        a.wait_for(
            lambda: (
                "opened" in http_receiver.events("database_up")
                and "opened" in http_receiver.events("agent_job:backup_full")
            ),
            timeout=60,
            what="the uptime and the failing-job incidents at the webhook",
        )
        down_open = IncidentStore(a.records("down") / "incidents").current("database_up")
        assert down_open is not None and down_open.severity == "P0"
        job = IncidentStore(a.records("norepo") / "incidents").current("agent_job:backup_full")
        assert job is not None and job.severity == "P1"
        assert "backup_full job failed" in job.message and "blocker" in job.message
        assert IncidentStore(a.records("norepo") / "incidents").current("database_up") is None

        # the faults go away: both are backed up without a restart
        down.start()
        (tmp_path / "blocker").unlink()
        a.wait_for(
            lambda: bool(backups(a, "down")) and bool(backups(a, "norepo")),
            timeout=240,
            what="backups once the database and the repository are back",
        )
        a.wait_for(
            lambda: (
                "resolved" in http_receiver.events("database_up")
                and "resolved" in http_receiver.events("agent_job:backup_full")
            ),
            timeout=60,
            what="both incidents resolved and told",
        )
        assert IncidentStore(a.records("down") / "incidents").current("database_up") is None
        assert a.stop(proc) == 0
        assert "Traceback" not in a.log()
        # the streamers' lines name their database (two of them in one log)
        assert "down: pg_receivewal started" in a.log()
        assert "norepo: pg_receivewal started" in a.log()
    finally:
        down.destroy()
        norepo.destroy()
