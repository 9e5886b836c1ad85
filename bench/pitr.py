"""RPO and RTO of `pgdr wal stream` + `pgdr restore --latest`, asynchronous and synchronous.

For each mode: a ~1 GB pgbench database (scale 70), `pgdr wal stream` beside it, a base backup,
then pgbench with a per-transaction log writes (client, n) rows, one per transaction, while at a
random moment the postmaster is killed with -9 and its data directory removed. `pgdr restore
--latest --new-cluster` brings it back; every transaction pgbench saw committed (its log) is
looked up in the restored database. RPO = transactions lost (and the span of time they cover),
RTO = seconds from the start of the restore to a promoted server accepting connections.

Run: .venv/bin/python bench/pitr.py [--scale 70] [--seconds 20] [--clients 4]
The second mode runs on the cluster the first restore produced (a new timeline), so the run
also exercises restoring across timelines.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from pgdr.cluster import LocalCluster, choose_installation
from pgdr.config import PgdrSettings
from pgdr.crypto.keys import generate_key_text

SCRIPT = """\\set n :n + 1
INSERT INTO bench_log (client, n) VALUES (:client_id, :n);
"""


def pgdr(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pgdr", *args], env=env, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"pgdr {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def committed(log_dir: Path) -> dict[tuple[int, int], float]:
    """(client, n) -> end time of every transaction pgbench logged as committed."""
    done: dict[tuple[int, int], float] = {}
    for path in log_dir.glob("pgbench_log*"):
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) < 6 or fields[2] in ("failed", "skipped"):
                continue
            client, tx_no = int(fields[0]), int(fields[1])  # tx_no counts from 1, like n
            done[(client, tx_no)] = int(fields[4]) + int(fields[5]) / 1e6
    return done


def run_mode(
    mode: str,
    cluster: LocalCluster,
    env: dict[str, str],
    work: Path,
    seconds: int,
    clients: int,
) -> tuple[dict[str, Any], LocalCluster]:
    env = dict(env, DATABASE_URL=cluster.conninfo())
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_log")
        conn.execute("CREATE TABLE bench_log (client int, n int, PRIMARY KEY (client, n))")
    stream_log = (work / f"stream-{mode}.log").open("wb")
    args = ["--synchronous"] if mode == "sync" else []
    streamer = subprocess.Popen(
        [sys.executable, "-m", "pgdr", "wal", "stream", *args],
        env=env,
        stdout=stream_log,
        stderr=subprocess.STDOUT,
    )
    want = "sync" if mode == "sync" else "async"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'pgdr'"
            ).fetchone()
        if row and row[0] == want:
            break
        time.sleep(0.2)
    else:
        raise SystemExit(f"the streamer did not become {want}")
    log(f"{mode}: streaming; taking a base backup")
    began = time.monotonic()
    pgdr(env, "backup", "--json")
    backup_s = time.monotonic() - began
    log(f"{mode}: backup took {backup_s:.1f} s; pgbench for up to {seconds * 2} s")
    log_dir = work / f"pgbench-{mode}"
    log_dir.mkdir()
    script = work / "bench.sql"
    script.write_text(SCRIPT)
    bench = subprocess.Popen(
        [
            str(cluster.installation.tool("pgbench")),
            "-n",
            "-T",
            str(seconds * 2),
            "-c",
            str(clients),
            "-j",
            "2",
            "-D",
            "n=0",
            "-f",
            str(script),
            "-l",
            f"--log-prefix={log_dir}/pgbench_log",
            cluster.conninfo(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(random.uniform(seconds * 0.5, seconds))
    kill_at = time.time()
    cluster.kill()
    shutil.rmtree(cluster.data_dir)
    log(f"{mode}: killed -9 and removed {cluster.data_dir}")
    bench.wait(timeout=120)
    began = time.monotonic()
    restored = pgdr(env, "restore", "--latest", "--new-cluster", "--json")
    rto = time.monotonic() - began
    result = json.loads(restored.stdout)
    streamer.send_signal(signal.SIGTERM)
    streamer.wait(timeout=60)
    with psycopg.connect(result["url"], autocommit=True) as conn:
        present = {(int(c), int(n)) for c, n in conn.execute("SELECT client, n FROM bench_log")}
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    acked = committed(log_dir)
    lost = [key for key in acked if key not in present]
    newest_kept = max((t for k, t in acked.items() if k in present), default=0.0)
    rpo_s = max((acked[k] for k in lost), default=newest_kept) - newest_kept
    row = {
        "mode": mode,
        "transactions_committed": len(acked),
        "transactions_lost": len(lost),
        "rpo_s": round(rpo_s, 3),
        "rto_s": round(rto, 1),
        "recovery_s": result["recovery_s"],
        "wal_segments": result["segments_fetched"],
        "database_gb": round((size[0] if size else 0) / 1e9, 2),
        "backup_s": round(backup_s, 1),
        "killed_at": kill_at,
        "recovered_to": result["recovered_to_time"],
        "timeline": result["timeline"],
        "lost": sorted(lost)[:20],
        # committed on the server but never acknowledged (in flight at the kill): not a loss
        "committed_unacknowledged": len(present - set(acked)),
    }
    log(f"{mode}: {row}")
    return row, LocalCluster(Path(result["cluster_dir"]), cluster.settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=70)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--modes", default="async,sync")
    parser.add_argument("--keep", action="store_true", help="Keep the work directory.")
    opts = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="pgdr-bench-pitr-", dir="/tmp"))
    home.chmod(0o711)
    settings = PgdrSettings(home=home)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DB_", "DATABASE_URL"))}
    env |= {
        "PGDR_HOME": str(home),
        "PGDR_REPO": str(home / "repo"),
        "PGDR_ENCRYPTION_KEY": generate_key_text(),
    }
    clusters: list[LocalCluster] = []
    try:
        cluster = LocalCluster(home / "clusters" / "source", settings)
        cluster.create(choose_installation(None, 18))
        cluster.set_config("max_wal_size = '2GB'\ncheckpoint_timeout = '15min'\n")
        cluster.start()
        clusters.append(cluster)
        log(f"pgbench -i -s {opts.scale}")
        began = time.monotonic()
        subprocess.run(
            [
                str(cluster.installation.tool("pgbench")),
                "-i",
                "-q",
                "-s",
                str(opts.scale),
                cluster.conninfo(),
            ],
            check=True,
            capture_output=True,
        )
        log(f"initialised in {time.monotonic() - began:.0f} s")
        rows = []
        for mode in opts.modes.split(","):
            work = home / f"work-{mode}"
            work.mkdir()
            row, cluster = run_mode(mode, cluster, env, work, opts.seconds, opts.clients)
            clusters.append(cluster)
            rows.append(row)
        print()
        header = (
            f"{'mode':<6} {'committed':>9} {'lost':>5} {'RPO s':>7} {'RTO s':>6} "
            f"{'replay s':>8} {'WAL segs':>8} {'DB GB':>6} {'backup s':>8}"
        )
        print(header)
        print("-" * len(header))
        for r in rows:
            print(
                f"{r['mode']:<6} {r['transactions_committed']:>9} {r['transactions_lost']:>5} "
                f"{r['rpo_s']:>7.3f} {r['rto_s']:>6.1f} {r['recovery_s']:>8.1f} "
                f"{r['wal_segments']:>8} {r['database_gb']:>6.2f} {r['backup_s']:>8.1f}"
            )
        (home / "results.json").write_text(json.dumps(rows, indent=2))
        print(f"\nresults: {home / 'results.json'}")
    finally:
        for c in clusters:
            try:
                if c.exists and c.status().running:
                    c.stop(mode="immediate")
            except Exception as exc:
                print(f"cleanup: {exc}")
        if not opts.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
