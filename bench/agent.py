"""Benchmark: what `pgdr agent` costs a busy database, and the RTO its restore test proves.

One embedded PostgreSQL 18 cluster holds the ConvoAI sample (``--scale``, database ``app``) and
a ``pgbench -i -s 1`` database. pgbench (tpcb-like, 2 clients) runs ``--seconds`` without the
agent, with the agent protecting ``app`` (WAL streaming of the whole cluster, checks every
2 minutes; its first backup and restore test already done), and without it again (A-B-A, to
show the machine's noise). The agent's first restore test of ``app`` gives the proven RTO.

Usage: ``.venv/bin/python bench/agent.py [--scale 1] [--seconds 30]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from pgdr.cluster import LocalCluster, choose_installation
from pgdr.config import PgdrSettings
from pgdr.sample import load_sample

CONFIG = """
[repositories.primary]
url = "{home}/repository"
[databases.app]
url_env = "APP_URL"
profile = "convoai"
[databases.app.schedule]
full = "1d"
restore_test = "7d"
uptime = "2m"
"""


def pgbench(cluster: LocalCluster, seconds: int) -> float:
    out = subprocess.run(
        [
            str(cluster.installation.tool("pgbench")),
            "-n",
            "-T",
            str(seconds),
            "-c",
            "2",
            "-j",
            "2",
            cluster.conninfo("bench"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"tps = ([0-9.]+)", out)
    assert match, out
    return float(match.group(1))


def history(home: Path) -> list[dict[str, object]]:
    path = home / "records" / "databases" / "app" / "agent" / "jobs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def set_up(cluster: LocalCluster, home: Path, scale: float) -> None:
    """The cluster with the sample in ``app``, pgbench's tables in ``bench``, the agent's
    configuration."""
    cluster.create(choose_installation(None, 18))
    cluster.start()
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE app")
        conn.execute("CREATE DATABASE bench")
    load_sample(cluster.conninfo("app"), scale=scale)
    pgbench_init = [str(cluster.installation.tool("pgbench")), "-i", "-q", "-s", "1"]
    subprocess.run([*pgbench_init, cluster.conninfo("bench")], check=True, capture_output=True)
    (home / "pgdr.toml").write_text(CONFIG.replace("{home}", str(home)))


def first_restore_test(home: Path, timeout: float = 900) -> dict[str, object]:
    """The agent's first restore test of ``app``, once it has finished or failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in history(home):
            if entry["job"] == "restore_test" and entry["event"] in ("finished", "failed"):
                return entry
        time.sleep(1)
    raise AssertionError((home / "agent.log").read_text()[-3000:])


def report(
    args: argparse.Namespace, tps: tuple[float, float, float], test: dict[str, object]
) -> None:
    before, with_agent, after = tps
    summary = test["summary"] or {}
    assert isinstance(summary, dict)
    print(f"sample scale {args.scale}; pgbench tpcb-like, scale 1, 2 clients, {args.seconds} s")
    print(f"{'run':<28}{'tps':>10}")
    print(f"{'without agent':<28}{before:>10.1f}")
    print(f"{'with agent (streaming)':<28}{with_agent:>10.1f}")
    print(f"{'without agent again':<28}{after:>10.1f}")
    base = (before + after) / 2
    print(f"overhead vs mean baseline: {100 * (base - with_agent) / base:.1f} %")
    print(
        f"restore test: {test['event']}; proven RTO {summary.get('proven_rto_s')} s; "
        f"steps {summary.get('steps')}; detail: {summary.get('detail')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="pgdr-ba-", dir="/tmp"))
    home.chmod(0o711)
    cluster = LocalCluster(home / "clusters" / "bench", PgdrSettings(home=home))
    agent: subprocess.Popen[bytes] | None = None
    try:
        set_up(cluster, home, args.scale)
        before = pgbench(cluster, args.seconds)
        env = dict(os.environ, PGDR_HOME=str(home), APP_URL=cluster.conninfo("app"))
        with (home / "agent.log").open("wb") as log:
            agent = subprocess.Popen(
                [sys.executable, "-m", "pgdr", "agent"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        test = first_restore_test(home)
        with_agent = pgbench(cluster, args.seconds)
        agent.send_signal(signal.SIGTERM)
        agent.wait(120)
        agent = None
        after = pgbench(cluster, args.seconds)
        report(args, (before, with_agent, after), test)
    finally:
        if agent is not None:
            agent.kill()
        cluster.destroy()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
