"""`pgdr agent` against two real PostgreSQL 18 databases with schedules of seconds.

Backups, retention, copies to a second tier, passing restore tests and streamed WAL appear; the
streamer's pg_receivewal is killed and comes back; the agent is killed with -9 and restarted
without a duplicate or a missed job; SIGTERM stops it cleanly; `pgdr status --json/--nagios`
reflect each state on the way.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from fixtures.agent import AgentEnv, agent_env, new_cluster, write_wal
from pgdr.cluster import LocalCluster
from pgdr.config import PgdrSettings
from pgdr.config.fleet import Schedule

CONFIG = """
[agent]
retry_base_s = 1
retry_max_s = 2
connect_retry_max_s = 2
stop_grace_s = 60

[repositories.primary]
url = "{root}/repo"
recovery_window_days = 0
daily_days = 0

[repositories.offsite]
url = "{root}/offsite"
recovery_window_days = 0
daily_days = 0

[databases.alpha]
url_env = "ALPHA_URL"
profile = "{root}/txlog.toml"
repositories = ["primary", "offsite"]
[databases.alpha.schedule]
full = "5s"
restore_test = "40s"
# no monitor rounds for alpha: its retention (0 days, a backup every 5 s) prunes each tested
# backup within seconds, and the monitor's restore_test check only counts tests of backups
# still listed (pgdr status also reads the agent's own history), so an incident would stay
# open; beta's rounds run (test_agent_faults covers incidents and notifications)
uptime = "off"

[databases.beta]
url_env = "BETA_URL"
profile = "{root}/txlog.toml"
[databases.beta.schedule]
full = "3s"
restore_test = "1s"
uptime = "2s"
"""
SCHEDULES = {
    "alpha": {"backup_full": "5s", "restore_test": "40s"},
    "beta": {"backup_full": "3s", "restore_test": "1s"},
}


def finished(a: AgentEnv, db: str, job: str) -> list[dict[str, Any]]:
    return a.events(db, job, "finished")


def removed_by_retention(a: AgentEnv, db: str) -> int:
    return sum(
        len(r["removed"]) for e in finished(a, db, "backup_full") for r in e["summary"]["retention"]
    )


def segments(repo: Path) -> list[str]:
    wal = repo / "wal"
    return [p.name for p in wal.rglob("*") if p.is_file() and len(p.name.split(".")[0]) == 24]


def receivewal_children(agent_pid: int, port: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == agent_pid and "pg_receivewal" in cmdline and f"port={port}" in cmdline:
            pids.append(int(entry.name))
    return pids


def check_history(a: AgentEnv, db: str) -> None:
    """Jobs never overlapped; no due was finished twice; every due ran or was recorded skipped."""
    open_run: str | None = None
    for e in a.history(db):
        if e["event"] == "started":
            assert open_run is None, f"{db}: {e['job']} started while {open_run} ran"
            open_run = e["job"]
        elif e["event"] in ("finished", "failed"):
            assert open_run == e["job"], f"{db}: {e} without a start"
            open_run = None
        elif e["event"] == "interrupted":
            open_run = None  # written at the next start for a run the kill cut off
    state = a.state(db)
    for job, text in SCHEDULES[db].items():
        step = Schedule(text, job).interval_s
        assert step is not None
        dues = [e["due"] for e in a.events(db, job, "finished")]
        assert len(dues) == len(set(dues)), f"{db} {job}: a due ran twice: {dues}"
        starts = [e["due"] for e in a.events(db, job, "started")]
        first = starts[0]
        for due in dues:
            assert abs((due - first) / step - round((due - first) / step)) < 1e-6
        skipped = sum(e["count"] for e in a.events(db, job, "skipped"))
        next_due = state["jobs"][job]["next_due"]
        expected = round((next_due - first) / step)
        assert len(dues) + skipped == expected, (
            f"{db} {job}: {len(dues)} runs + {skipped} skipped != {expected} occurrences"
        )


@pytest.mark.timeout(900)
def test_agent_protects_two_databases(
    settings: PgdrSettings, tmp_path: Path, agent_procs: list[AgentEnv]
) -> None:
    alpha = new_cluster(settings, "alpha")
    beta = new_cluster(settings, "beta")
    try:
        a = agent_env(
            settings, tmp_path, CONFIG, ALPHA_URL=alpha.conninfo(), BETA_URL=beta.conninfo()
        )
        agent_procs.append(a)
        run(a, alpha, beta)
    finally:
        alpha.destroy()
        beta.destroy()


def run(a: AgentEnv, alpha: LocalCluster, beta: LocalCluster) -> None:
    proc = a.start()

    # ---- everything appears: backups, pruning, copies, restore tests, streamed WAL ---------
    def protected_work() -> bool:
        write_wal(alpha, 5)
        write_wal(beta, 5)
        return all(
            len(finished(a, db, "backup_full")) >= 2
            and removed_by_retention(a, db) >= 1
            and finished(a, db, "restore_test")
            and segments(a.root / "repo" / "databases" / db)
            for db in ("alpha", "beta")
        )

    a.wait_for(protected_work, timeout=480, what="backups, pruning, restore tests and WAL")
    test = finished(a, "alpha", "restore_test")[0]["summary"]
    assert test["passed"] and test["proven_rto_s"] > 0
    assert "pg_amcheck" in test["steps"] and "integrity check" in test["steps"]
    assert test["wal_segments"] >= 1  # recovered through streamed WAL, not just the backup
    assert list((a.root / "offsite" / "databases" / "alpha" / "backups").iterdir())
    assert not (a.root / "offsite" / "databases" / "beta").exists()  # beta has one tier
    # beta's restore test (every 1 s) always runs past its next due time: skipped, not stacked
    a.wait_for(lambda: bool(a.events("beta", "restore_test", "skipped")), what="a skip")
    assert any("ran past" in e["reason"] for e in a.events("beta", "restore_test", "skipped"))

    def alpha_protected() -> bool:
        code, report = a.status()
        alpha_now = report["databases"]["alpha"]
        # the window's end is the newest moment the streamer proved held; it is unknown (None)
        # for a moment when the streamer's record names a segment that retention (a backup
        # every 5 s, 0 days kept) removed before the streamer's next upload (in one CI run in
        # three; test_restore_pitr_trust.py::
        # test_a_record_of_a_removed_segment_leaves_the_window_end_unknown): wait it out
        window = alpha_now.get("recovery_window") or {}
        return code in (0, 1) and alpha_now["state"] == "protected" and bool(window.get("end"))

    a.wait_for(alpha_protected, timeout=120, what="alpha protected in status")
    _code, report = a.status()
    alpha_status = report["databases"]["alpha"]
    assert alpha_status["wal"]["streaming"] is True
    assert alpha_status["last_backup"]["age_seconds"] >= 0
    assert alpha_status["last_restore_test"]["passed"] is True
    assert alpha_status["recovery_window"]["start"] and alpha_status["recovery_window"]["end"]
    assert set(alpha_status["next_jobs"]) == {"backup_full", "restore_test"}
    nagios = a.cli("status", "--nagios", "--db", "alpha")
    assert nagios.code == 0 and nagios.stdout.startswith("PGDR OK - alpha protected")
    assert "alpha_proven_rto=" in nagios.stdout and "alpha_backup_age=" in nagios.stdout

    # ---- pg_receivewal killed: the streamer brings it back ---------------------------------
    children = receivewal_children(proc.pid, alpha.port)
    assert children, a.log()[-3000:]
    for pid in children:
        os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        write_wal(alpha, 1, switch=False)
        wal = a.status()[1]["databases"]["alpha"]["wal"]
        return (
            bool(wal["restarts"])
            and wal["streaming"]
            and receivewal_children(proc.pid, alpha.port) not in ([], children)
        )

    a.wait_for(restarted, timeout=60, what="pg_receivewal restarted")

    # ---- kill -9: status degrades, a restart neither repeats nor skips ---------------------
    proc.kill()
    proc.wait()

    def streamer_stale() -> bool:
        # not merely degraded: the receiver killed above may still be reported as failing
        # until the streamer saw its successor stream, and the agent may die before that
        code, report = a.status()
        alpha_status = report["databases"]["alpha"]
        return (
            code == 1
            and alpha_status["state"] == "degraded"
            and any("No WAL streamer is alive" in r for r in alpha_status["reasons"])
        )

    a.wait_for(streamer_stale, timeout=60, what="alpha degraded once the agent is gone")
    warning = a.cli("status", "--nagios", "--db", "alpha")
    assert warning.code == 1 and warning.stdout.startswith("PGDR WARNING - alpha degraded")

    before = {db: len(finished(a, db, "backup_full")) for db in ("alpha", "beta")}
    proc = a.start()
    a.wait_for(
        lambda: all(len(finished(a, db, "backup_full")) >= before[db] + 2 for db in before),
        timeout=180,
        what="backups after the restart",
    )
    write_wal(alpha, 5)
    assert a.stop(proc) == 0
    log = a.log()
    assert "Traceback" not in log, log[-5000:]
    assert "pgdr agent stopped cleanly" in log or "it runs again" in log
    for db in ("alpha", "beta"):
        check_history(a, db)
    assert not list((a.home / "scratch").glob("rt-*")), "a throwaway cluster was left"
    # the streamer flushed on SIGTERM: its last state says stopped
    _code, report = a.status()
    assert report["databases"]["alpha"]["wal"]["state"] == "stopped"
