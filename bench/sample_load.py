"""Benchmark: `pgdr sample load` against a plain COPY of the very same rows.

Loads the ConvoAI sample through pgdr (generation + binary COPY), dumps each table with
`COPY ... TO STDOUT (FORMAT BINARY)`, then times loading those dumps into an empty copy of the
schema with plain COPY — the floor any loader can reach. Index builds are excluded from both.

    .venv/bin/python bench/sample_load.py [--scale 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from pgdr.cluster import LocalCluster, choose_installation
from pgdr.config import PgdrSettings
from pgdr.sample import load_sample
from pgdr.sample.loader import TABLES


def _plain_copy(conninfo: str, dumps: dict[str, bytes]) -> float:
    with psycopg.connect(conninfo) as conn:
        for table in reversed(TABLES):
            conn.execute(f"TRUNCATE {table} CASCADE")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur:
            for table in TABLES:
                with cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(dumps[table])
        conn.commit()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="pgdr-bench-", dir="/tmp"))
    home.chmod(0o711)
    cluster = LocalCluster(home / "clusters" / "bench", PgdrSettings(home=home))
    cluster.create(choose_installation(None, 18))
    cluster.start()
    try:
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE a")
            conn.execute("CREATE DATABASE b")
        pgdr_times = []
        for _ in range(args.runs):
            report = load_sample(
                cluster.conninfo("a"), scale=args.scale, force=True, vector_indexes=False
            )
            pgdr_times.append(report.load_seconds)
        dumps: dict[str, bytes] = {}
        with psycopg.connect(cluster.conninfo("a")) as conn, conn.cursor() as cur:
            for table in TABLES:
                with cur.copy(f"COPY {table} TO STDOUT (FORMAT BINARY)") as copy:
                    dumps[table] = b"".join(bytes(block) for block in copy)
        load_sample(cluster.conninfo("b"), scale=0.01, force=True, vector_indexes=False)
        copy_times = [_plain_copy(cluster.conninfo("b"), dumps) for _ in range(args.runs)]
        size_mb = sum(len(d) for d in dumps.values()) / 1e6
        pgdr_median = statistics.median(pgdr_times)
        copy_median = statistics.median(copy_times)
        print(
            f"ConvoAI sample, scale {args.scale}: {sum(report.rows.values()):,} rows, "
            f"{size_mb:,.1f} MB of COPY data, {args.runs} runs, medians"
        )
        print(f"{'loader':<28}{'seconds':>10}{'MB/s':>10}")
        print(f"{'pgdr sample load':<28}{pgdr_median:>10.2f}{size_mb / pgdr_median:>10.1f}")
        print(
            f"{'plain COPY (pre-made data)':<28}{copy_median:>10.2f}{size_mb / copy_median:>10.1f}"
        )
        print(f"ratio pgdr / plain COPY: {pgdr_median / copy_median:.2f}")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
