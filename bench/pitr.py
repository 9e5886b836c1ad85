"""RPO and RTO of `pgdr wal stream` + `pgdr restore --latest`, asynchronous and synchronous.

For each mode: a ~1 GB pgbench database (scale 70), `pgdr wal stream` beside it, a base backup,
then pgbench with a per-transaction log writes (client, n) rows, one per transaction, while at a
random moment the postmaster is killed with -9 and its data directory removed. `pgdr restore
--latest --new-cluster` brings it back; every transaction pgbench saw committed (its log) is
looked up in the restored database. RPO = transactions lost (and the span of time they cover),
RTO = seconds from the start of the restore to a promoted server accepting connections.

The peer: pgBackRest with ``archive_command = 'pgbackrest archive-push %p'`` and
``archive_timeout = 60`` (the runbook's 1-minute PITR granularity), restored with
``pgbackrest restore`` (to the end of the archive) and started until promoted.

Run: .venv/bin/python bench/pitr.py [--scale 70] [--seconds 20] [--clients 4]
Each mode runs on the cluster the previous restore produced (a new timeline), so the run also
exercises restoring across timelines. A copy restored by pgdr starts with
``archive_mode = off`` and ``synchronous_standby_names = ''`` on its command line (it must never
archive into the repository it came from, nor wait for a standby it does not have); the next
mode makes it the primary it is in this story, so it is restarted without those two options
first (:func:`as_new_primary`: what ``pgdr cluster start --as-primary`` does), or neither
synchronous streaming nor pgBackRest's archiving could work on it.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from pgdr.cluster import LocalCluster, choose_installation
from pgdr.config import PgdrSettings
from pgdr.crypto.keys import generate_key_text
from pgdr.restore.start import SAFE_OPTIONS, start_as_primary

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


def wait_sync_state(cluster: LocalCluster, want: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'pgdr'"
            ).fetchone()
        if row and row[0] == want:
            return
        time.sleep(0.2)
    raise SystemExit(f"the streamer did not become {want}")


def write_and_kill(
    mode: str, cluster: LocalCluster, work: Path, seconds: int, clients: int
) -> tuple[Path, float]:
    """pgbench with a per-transaction log; kill -9 and rm -rf at a random moment."""
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
    return log_dir, kill_at


def count(
    mode: str, url: str, log_dir: Path, rto: float, backup_s: float, extra: dict[str, Any]
) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        present = {(int(c), int(n)) for c, n in conn.execute("SELECT client, n FROM bench_log")}
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    acked = committed(log_dir)
    lost = [key for key in acked if key not in present]
    newest_kept = max((t for k, t in acked.items() if k in present), default=0.0)
    if not present & set(acked):
        newest_kept = min(acked.values(), default=0.0)
    rpo_s = max((acked[k] for k in lost), default=newest_kept) - newest_kept
    row = {
        "mode": mode,
        "transactions_committed": len(acked),
        "transactions_lost": len(lost),
        "rpo_s": round(rpo_s, 3),
        "rto_s": round(rto, 1),
        "database_gb": round((size[0] if size else 0) / 1e9, 2),
        "backup_s": round(backup_s, 1),
        # committed on the server but never acknowledged (in flight at the kill): not a loss
        "committed_unacknowledged": len(present - set(acked)),
    } | extra
    log(f"{mode}: {row}")
    return row


def fresh_log_table(cluster: LocalCluster) -> None:
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_log")
        conn.execute("CREATE TABLE bench_log (client int, n int, PRIMARY KEY (client, n))")


def as_new_primary(cluster: LocalCluster) -> None:
    """Restart a copy pgdr restored as the primary it is in this story, as an operator does
    (``pgdr cluster start NAME --as-primary``); a cluster that is no copy is left running."""
    meta = json.loads(cluster.meta_file.read_text())
    if not SAFE_OPTIONS.keys() & set(meta.get("server_options") or {}):
        return
    cluster.stop()
    start_as_primary(cluster)


def run_pgdr(
    mode: str,
    cluster: LocalCluster,
    env: dict[str, str],
    work: Path,
    seconds: int,
    clients: int,
) -> tuple[dict[str, Any], LocalCluster]:
    env = dict(env, DATABASE_URL=cluster.conninfo())
    fresh_log_table(cluster)
    stream_log = (work / f"stream-{mode}.log").open("wb")
    args = ["--synchronous"] if mode == "sync" else []
    streamer = subprocess.Popen(
        [sys.executable, "-m", "pgdr", "wal", "stream", *args],
        env=env,
        stdout=stream_log,
        stderr=subprocess.STDOUT,
    )
    wait_sync_state(cluster, "sync" if mode == "sync" else "async")
    log(f"{mode}: streaming; taking a base backup")
    began = time.monotonic()
    pgdr(env, "backup", "--json")
    backup_s = time.monotonic() - began
    log(f"{mode}: backup took {backup_s:.1f} s; pgbench for up to {seconds * 2} s")
    log_dir, _kill_at = write_and_kill(mode, cluster, work, seconds, clients)
    began = time.monotonic()
    restored = pgdr(env, "restore", "--latest", "--new-cluster", "--json")
    rto = time.monotonic() - began
    result = json.loads(restored.stdout)
    streamer.send_signal(signal.SIGTERM)
    streamer.wait(timeout=60)
    row = count(
        f"pgdr {mode}",
        result["url"],
        log_dir,
        rto,
        backup_s,
        {"recovery_s": result["recovery_s"], "timeline": result["timeline"]},
    )
    return row, LocalCluster(Path(result["cluster_dir"]), cluster.settings)


PGBR_CONF = """[global]
repo1-path={base}/repo
compress-type=zst
process-max=2
start-fast=y
log-level-console=warn
log-level-file=off
log-path={base}/log
lock-path={base}/lock
spool-path={base}/spool

[bench]
pg1-path={data_dir}
pg1-socket-path={socket_dir}
pg1-port={port}
pg1-user=postgres
"""


def pgbackrest_for(cluster: LocalCluster, work: Path) -> tuple[Path, Callable[..., None]]:
    """pgBackRest's configuration for ``cluster`` under ``work``, and a runner of its commands."""
    user = cluster.user
    base = work / "pgbackrest"
    conf = base / "pgbackrest.conf"
    for sub in ("repo", "log", "lock", "spool"):
        (base / sub).mkdir(parents=True, exist_ok=True)
        user.own(base / sub, 0o700)
    user.own(base, 0o755)
    work.chmod(0o711)
    conf.write_text(
        PGBR_CONF.format(
            base=base,
            data_dir=cluster.data_dir,
            socket_dir=cluster.socket_dir,
            port=cluster.port,
        )
    )
    conf.chmod(0o644)

    def pgbr(*args: str) -> None:
        done = subprocess.run(
            ["pgbackrest", f"--config={conf}", "--stanza=bench", *args],
            user=user.uid,
            group=user.gid,
            extra_groups=[],
            cwd="/",
            check=False,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"pgbackrest {args[0]} failed: {done.stdout}{done.stderr}")

    return conf, pgbr


def wait_promoted(cluster: LocalCluster, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        if row and not row[0]:
            return
        time.sleep(0.1)


def run_pgbackrest(
    cluster: LocalCluster, work: Path, seconds: int, clients: int
) -> tuple[dict[str, Any], LocalCluster]:
    """The peer: pgBackRest 2.x with archive_command = archive-push, archive_timeout = 60."""
    conf, pgbr = pgbackrest_for(cluster, work)
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM RESET ALL")  # pgdr's synchronous_standby_names and friends
        conn.execute("ALTER SYSTEM SET archive_mode = on")
        conn.execute(
            "ALTER SYSTEM SET archive_command = "
            f"'pgbackrest --config={conf} --stanza=bench archive-push %p'"
        )
        conn.execute("ALTER SYSTEM SET archive_timeout = 60")
    cluster.stop()
    cluster.start()
    fresh_log_table(cluster)
    pgbr("stanza-create")
    pgbr("check")
    began = time.monotonic()
    pgbr("backup", "--type=full")
    backup_s = time.monotonic() - began
    log(f"pgbackrest: backup took {backup_s:.1f} s; pgbench for up to {seconds * 2} s")
    log_dir, _kill_at = write_and_kill("pgbackrest", cluster, work, seconds, clients)
    began = time.monotonic()
    restored = LocalCluster(
        cluster.settings.home / "clusters" / "pgbackrest-restore", cluster.settings
    )
    restored.directory.mkdir(parents=True)
    restored.directory.chmod(0o711)
    restored.data_dir.mkdir()
    cluster.user.own(restored.data_dir, 0o700)
    pgbr("restore", f"--pg1-path={restored.data_dir}")
    restored.adopt(cluster.installation)
    restored.log_file.touch()
    cluster.user.own(restored.log_file, 0o600)
    restored.start()
    wait_promoted(restored)
    rto = time.monotonic() - began
    return count("pgBackRest", restored.conninfo(), log_dir, rto, backup_s, {}), restored


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=70)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--modes", default="async,sync,pgbackrest")
    parser.add_argument("--keep", action="store_true", help="Keep the work directory.")
    parser.add_argument(
        "--major", type=int, default=15, help="PostgreSQL major (pgBackRest 2.45 stops at 17)"
    )
    return parser.parse_args()


def source_cluster(
    home: Path, settings: PgdrSettings, opts: argparse.Namespace, clusters: list[LocalCluster]
) -> LocalCluster:
    """The cluster the first mode starts from, with pgbench's tables (in ``clusters`` once
    started, so that it is stopped whatever happens next)."""
    cluster = LocalCluster(home / "clusters" / "source", settings)
    cluster.create(choose_installation(None, opts.major))
    cluster.set_config("max_wal_size = '2GB'\ncheckpoint_timeout = '15min'\n")
    cluster.start()
    clusters.append(cluster)
    log(f"pgbench -i -s {opts.scale}")
    began = time.monotonic()
    pgbench = str(cluster.installation.tool("pgbench"))
    subprocess.run(
        [pgbench, "-i", "-q", "-s", str(opts.scale), cluster.conninfo()],
        check=True,
        capture_output=True,
    )
    log(f"initialised in {time.monotonic() - began:.0f} s")
    return cluster


def report(rows: list[dict[str, Any]], home: Path) -> None:
    print()
    header = (
        f"{'':<12} {'committed':>9} {'lost':>6} {'RPO s':>7} {'RTO s':>6} "
        f"{'DB GB':>6} {'backup s':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['mode']:<12} {r['transactions_committed']:>9} {r['transactions_lost']:>6} "
            f"{r['rpo_s']:>7.3f} {r['rto_s']:>6.1f} {r['database_gb']:>6.2f} "
            f"{r['backup_s']:>8.1f}"
        )
    (home / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"\nresults: {home / 'results.json'}")


def stop_all(clusters: list[LocalCluster]) -> None:
    for c in clusters:
        try:
            if c.exists and c.status().running:
                c.stop(mode="immediate")
        except Exception as exc:
            print(f"cleanup: {exc}")


def main() -> None:
    opts = parse_args()
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
        cluster = source_cluster(home, settings, opts, clusters)
        rows = []
        for mode in opts.modes.split(","):
            work = home / f"work-{mode}"
            work.mkdir()
            as_new_primary(cluster)
            if mode == "pgbackrest":
                row, cluster = run_pgbackrest(cluster, work, opts.seconds, opts.clients)
            else:
                row, cluster = run_pgdr(mode, cluster, env, work, opts.seconds, opts.clients)
            clusters.append(cluster)
            rows.append(row)
        report(rows, home)
    finally:
        stop_all(clusters)
        if not opts.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
