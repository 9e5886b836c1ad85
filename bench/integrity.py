"""Benchmark: `pgdr check` vs plain `SELECT count(*)` vs the runbook's queries one by one.

    .venv/bin/python bench/integrity.py --rows 1000000 --repeat 5

Builds a private cluster under a temporary PGDR_HOME, loads the ConvoAI schema (sample scale 1,
no HNSW indexes) and adds ``--rows`` embedding rows (and a quarter as many knowledge-base rows)
with 1536-dimension vectors generated in SQL (`array_fill`, so loading is cheap; each vector is
still a 6 KB TOASTed value). Then, for ``--repeat`` rounds after one warm-up, times:

* ``count(*)``: a fresh connection and `SELECT count(*)` of each of the profile's seven tables
  (the planner's choice: index-only scans after VACUUM), and the same forced to read the heap;
* ``runbook``: the runbook's Scenario 1/2 and Migration 005 verification queries, one by one;
* ``pgdr check``: `run_check()` with the ConvoAI profile (catalog, every FK, embeddings, rules,
  checksum counters), vectors judged by their stored size;
* ``pgdr check --vectors``: the same, reading every vector (NaN, infinity, zero vectors).

Prints medians and ratios to `count(*)`. ``--keep`` leaves the cluster for another run, which
``--reuse`` then picks up instead of loading again.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from pgdr.cluster import LocalCluster, choose_installation
from pgdr.config import PgdrSettings
from pgdr.integrity import CheckOptions, run_check
from pgdr.profile import load_profile
from pgdr.sample import load_sample

TABLES = (
    "users",
    "chatbots",
    "subscriptions",
    "conversations",
    "messages",
    "embeddings",
    "knowledge_base",
)
RUNBOOK = [
    # Scenario 1, step 4: verify restoration
    "SELECT MAX(created_at) FROM users",
    "SELECT MAX(created_at) FROM chatbots",
    "SELECT MAX(created_at) FROM conversations",
    "SELECT (SELECT COUNT(*) FROM users) AS users, (SELECT COUNT(*) FROM chatbots) AS chatbots,"
    " (SELECT COUNT(*) FROM conversations) AS conversations",
    # Scenario 2, step 1: corruption scope (array_length() becomes vector_dims() for pgvector)
    "SELECT COUNT(*) FROM chatbots c LEFT JOIN users u ON c.user_id = u.id WHERE u.id IS NULL",
    "SELECT COUNT(*) FROM embeddings WHERE embedding IS NULL"
    " OR extensions.vector_dims(embedding) != 1536",
    # Scenario 2, step 4: verify embeddings
    "SELECT chatbot_id, COUNT(*) FROM embeddings GROUP BY chatbot_id HAVING COUNT(*) > 0",
    # Migration 005 verification
    "SELECT 'embeddings' AS table_name, COUNT(*) AS total, COUNT(embedding) AS with_embedding,"
    " COUNT(*) FILTER (WHERE embedding IS NULL) AS missing FROM embeddings"
    " UNION ALL SELECT 'knowledge_base', COUNT(*), COUNT(embedding),"
    " COUNT(*) FILTER (WHERE embedding IS NULL AND enabled = true) FROM knowledge_base",
]


def load(conninfo: str, rows: int) -> None:
    started = time.perf_counter()
    load_sample(conninfo, scale=1, vector_indexes=False, force=True)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET search_path = public, extensions")
        for table, n in (("embeddings", rows), ("knowledge_base", rows // 4)):
            done = 0
            while done < n:
                batch = min(50_000, n - done)
                extra = (
                    ", (g %% 10) <> 0" if table == "knowledge_base" else ", 'https://x.example/p'"
                )
                columns = (
                    "chatbot_id, question, answer, enabled, embedding, created_at"
                    if table == "knowledge_base"
                    else "chatbot_id, content, source_url, embedding, created_at"
                )
                text = "'q' || g, 'a' || g" if table == "knowledge_base" else "'chunk ' || g"
                select = f"b.ids[1 + g %% b.n], {text}{extra}"
                conn.execute(
                    f"INSERT INTO {table} ({columns}) "
                    f"SELECT {select}, "
                    "array_fill(((g %% 97 + 1) / 97.0)::real, ARRAY[1536])::vector, "
                    "timestamptz '2025-06-01' + g * interval '1 second' "
                    "FROM generate_series(%s::bigint, %s::bigint) g, "
                    "(SELECT array_agg(id ORDER BY id) AS ids, count(*)::int AS n FROM chatbots) b",
                    (done + 1, done + batch),
                )
                done += batch
                print(f"  {table}: {done:,}/{n:,}", flush=True)
        conn.execute("VACUUM ANALYZE")
    print(f"loaded in {time.perf_counter() - started:.0f} s")


def counts(conninfo: str, heap: bool = False) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if heap:  # make count(*) read the tables, as the checks must, not just an index
            conn.execute("SET enable_indexonlyscan = off")
            conn.execute("SET enable_indexscan = off")
            conn.execute("SET enable_bitmapscan = off")
        for table in TABLES:
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()


def runbook(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for query in RUNBOOK:
            conn.execute(query).fetchall()


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: caches, catalog
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="embedding rows")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--home", type=Path, help="PGDR_HOME for the cluster (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the cluster afterwards")
    parser.add_argument("--reuse", action="store_true", help="reuse a kept cluster as is")
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="pgdr-bench-", dir="/tmp"))
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o711)
    settings = PgdrSettings(home=home)
    cluster = LocalCluster(home / "clusters" / "bench", settings)
    if not (args.reuse and cluster.exists):
        cluster.create(choose_installation(None, 18))
    cluster.start()
    try:
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'convoai'").fetchone()
            if not exists:
                conn.execute("CREATE DATABASE convoai")
        conninfo = cluster.conninfo("convoai")
        if not (args.reuse and exists):
            load(conninfo, args.rows)
        with psycopg.connect(conninfo) as conn:
            row = conn.execute(
                "SELECT count(*), pg_size_pretty(pg_database_size(current_database())) "
                "FROM embeddings"
            ).fetchone()
        assert row is not None
        print(f"embeddings rows: {row[0]:,}; database size {row[1]}")
        profile = load_profile("convoai")
        fast = CheckOptions()
        full = CheckOptions(vectors=True)
        report = run_check(conninfo, profile, fast)
        assert report.critical == 0, report.as_dict()["findings"]
        results = {
            "SELECT count(*) x7": timed(lambda: counts(conninfo), args.repeat),
            "SELECT count(*) x7, seq scans": timed(lambda: counts(conninfo, True), args.repeat),
            "runbook queries one by one": timed(lambda: runbook(conninfo), args.repeat),
            "pgdr check": timed(lambda: run_check(conninfo, profile, fast), args.repeat),
            "pgdr check --vectors": timed(lambda: run_check(conninfo, profile, full), args.repeat),
        }
        base = results["SELECT count(*) x7"]
        print(f"\n{'what':<30} {'median s':>10} {'x count(*)':>11}")
        for name, seconds in results.items():
            print(f"{name:<30} {seconds:>10.3f} {seconds / base:>11.2f}")
        check = results["pgdr check"]
        runbook_s = results["runbook queries one by one"]
        heap_s = results["SELECT count(*) x7, seq scans"]
        print(f"\npgdr check / runbook queries: {check / runbook_s:.2f}")
        print(f"pgdr check / count(*) with seq scans: {check / heap_s:.2f}")
    finally:
        if not args.keep:
            cluster.stop()
            cluster.destroy()


if __name__ == "__main__":
    main()
