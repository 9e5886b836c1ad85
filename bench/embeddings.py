"""Embedding regeneration: the runbook's migration-005 script versus ``pgdr reembed``.

Both run against the same fake OpenAI embeddings API (a separate process, 20 ms per request,
up to 2,048 inputs per request) on the same ConvoAI database after a simulated migration 005
(vector columns dropped and recreated empty), on ``--chunks`` embedding rows (all chatbots
``ready``, so both do the same work):

* runbook: a faithful Python port of ``regenerate-embeddings.ts``: chatbot by chatbot, batches of
  10 chunks in parallel, one API request and one ``UPDATE`` per chunk;
* pgdr: ``Reembedder`` with the CLI's defaults (cache on, index policy auto);
* pgdr, cache warm: migration 005 again, then a full regeneration from the content-hash cache;
* the server alone: migration 005 again, then one ``UPDATE`` that takes every row's vector from
  the cache in a single statement (no client, no batches, no API): what this server does with
  the same writes and nothing else, a reference for the ratios above.

Prints rows/s, the ratio, database time against wall time, and API requests.

    python bench/embeddings.py --chunks 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool

from pgdr.cluster import LocalCluster, choose_installation
from pgdr.config import PgdrSettings
from pgdr.core.memory import keep_freed_memory
from pgdr.embeddings import EmbeddingSettings, OpenAIProvider, Reembedder, ReembedOptions
from pgdr.embeddings.providers import _decode
from pgdr.profile import load_profile
from pgdr.sample import load_sample
from pgdr.sample.loader import PER_SCALE

API_KEY = "sk-bench"
MODEL = "text-embedding-3-small"


def start_api(port: int, latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgdr.embeddings.fake_api",
            "--port",
            str(port),
            "--latency",
            str(latency),
            "--api-key",
            API_KEY,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    return proc, url


def api_stats(url: str) -> dict[str, int]:
    return dict(httpx.get(url.removesuffix("/v1") + "/stats").json())


def api_reset(url: str) -> None:
    httpx.post(url.removesuffix("/v1") + "/reset")


def migrate_005(conninfo: str, hnsw: bool) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn, conn.transaction():
        for table in ("embeddings", "knowledge_base"):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN embedding")
            conn.execute(f"ALTER TABLE {table} ADD COLUMN embedding extensions.vector(1536)")
            if hnsw:
                conn.execute(
                    f"CREATE INDEX {table}_embedding_hnsw ON {table} "
                    "USING hnsw (embedding extensions.vector_cosine_ops)"
                )
        conn.execute("UPDATE chatbots SET status = 'ready'")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE embeddings")
        # every run starts with the migration's pages on disk, not with a checkpoint to finish
        conn.execute("CHECKPOINT")


class Clock:
    """Seconds spent in database calls, summed over threads."""

    def __init__(self) -> None:
        self.db = 0.0

    def timed(self, conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
        t = time.perf_counter()
        rows = conn.execute(query, params).fetchall() if "SELECT" in query else None
        if rows is None:
            conn.execute(query, params)
        self.db += time.perf_counter() - t
        return rows


def runbook(conninfo: str, url: str, max_rows: int | None) -> dict[str, float]:
    """regenerate-embeddings.ts, ported: one request and one UPDATE per chunk, 10 at a time."""
    clock = Clock()
    client = httpx.Client(base_url=url + "/", headers={"Authorization": f"Bearer {API_KEY}"})

    def generate_embedding(text: str) -> np.ndarray[Any, Any]:
        reply = client.post(
            "embeddings", json={"model": MODEL, "input": text, "encoding_format": "base64"}
        )
        reply.raise_for_status()
        return _decode(reply.json()["data"][0])

    pool = ConnectionPool(conninfo, min_size=10, max_size=10, configure=register_vector)
    main = psycopg.connect(conninfo, autocommit=True)
    done = 0
    started = time.perf_counter()

    def one(row: tuple[int, str]) -> None:
        vec = generate_embedding(row[1])
        with pool.connection() as conn:
            t = time.perf_counter()
            conn.execute("UPDATE embeddings SET embedding = %s WHERE id = %s", (vec, row[0]))
            clock.db += time.perf_counter() - t

    with ThreadPoolExecutor(10) as executor:
        chatbots = clock.timed(main, "SELECT id, name FROM chatbots WHERE status = 'ready'")
        for bot_id, _name in chatbots:
            if max_rows is not None and done >= max_rows:
                break
            clock.timed(main, "UPDATE chatbots SET status = 'embedding' WHERE id = %s", (bot_id,))
            rows = clock.timed(
                main, "SELECT id, content FROM embeddings WHERE chatbot_id = %s", (bot_id,)
            )
            for i in range(0, len(rows), 10):
                list(executor.map(one, rows[i : i + 10]))  # await Promise.all(batch.map(...))
            clock.timed(main, "UPDATE chatbots SET status = 'ready' WHERE id = %s", (bot_id,))
            done += len(rows)
    wall = time.perf_counter() - started
    pool.close()
    main.close()
    client.close()
    return {"rows": done, "wall": wall, "db": clock.db, "threads": 10}


def wal_and_checkpoints(conninfo: str) -> tuple[int, int]:
    """The server's WAL position (bytes) and its checkpoints so far (timed and requested)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, num_timed + num_requested "
            "FROM pg_stat_checkpointer"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def server_alone(conninfo: str) -> dict[str, Any]:
    """Every row's vector from the cache in one statement: the server's time, and its WAL."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        start_lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        t = time.perf_counter()
        rows = conn.execute(
            "UPDATE embeddings e SET embedding = c.embedding::extensions.vector(1536) "
            "FROM pgdr.embedding_cache c WHERE c.model = %s AND c.dimension = 1536 "
            "AND c.sha256 = sha256(convert_to(e.content, 'UTF8'))",
            (MODEL,),
        ).rowcount
        wall = time.perf_counter() - t
        wal = conn.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", start_lsn).fetchone()
    assert wal is not None
    return {"rows": rows, "wall": wall, "db": wall, "threads": 1, "wal_mb": float(wal[0]) / 1e6}


def pgdr_run(
    conninfo: str, url: str, workers: int, batch_rows: int, drop_indexes: str = "auto"
) -> dict[str, Any]:
    settings = EmbeddingSettings(OPENAI_BASE_URL=url, OPENAI_API_KEY=API_KEY)
    provider = OpenAIProvider(settings)
    try:
        engine = Reembedder(
            conninfo,
            load_profile("convoai"),
            provider,
            ReembedOptions(
                sources=["embeddings"],
                workers=workers,
                batch_rows=batch_rows,
                drop_indexes=drop_indexes,
            ),
        )
        wal, checkpoints = wal_and_checkpoints(conninfo)
        started = time.perf_counter()
        engine.prepare()
        report = engine.run()
        wall = time.perf_counter() - started
        wal_after, checkpoints_after = wal_and_checkpoints(conninfo)
    finally:
        provider.close()
    src = report.sources[0]
    assert report.verification[0]["missing"] == 0, report.verification
    return {
        "rows": src.written,
        "wall": wall,
        "db": report.db_seconds,
        "threads": workers,
        "cache_hits": src.cache_hits,
        "indexes_rebuilt": src.indexes_rebuilt,
        "api": report.api_seconds,
        "steps": {k: round(v, 2) for k, v in report.db_steps.items()},
        "wal_mb": (wal_after - wal) / 1e6,
        "checkpoints": checkpoints_after - checkpoints,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-rows", type=int, default=1000)
    parser.add_argument("--hnsw", action="store_true", help="recreate the HNSW index (005 does)")
    parser.add_argument(
        "--baseline-rows", type=int, default=None, help="stop the runbook port after N rows"
    )
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--skip-baseline", action="store_true", help="only run pgdr")
    parser.add_argument("--drop-indexes", default="auto", choices=["auto", "always", "never"])
    parser.add_argument(
        "--max-wal-size",
        default=None,
        help="the server's max_wal_size (default: PostgreSQL's, 1GB): checkpoints in the run",
    )
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI's first step does: `pgdr reembed` runs with it

    home = args.home or Path(tempfile.mkdtemp(prefix="pgdr-bench-", dir="/tmp"))
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o711)
    settings = PgdrSettings(home=home)
    cluster = LocalCluster(home / "clusters" / "bench", settings)
    api, url = start_api(args.port, args.latency)
    try:
        if not cluster.exists:
            cluster.create(choose_installation(None, 18))
        cluster.set_config(f"max_wal_size = '{args.max_wal_size}'\n" if args.max_wal_size else "")
        cluster.start()
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS bench")
            conn.execute("CREATE DATABASE bench")
        db = cluster.conninfo("bench")
        t = time.perf_counter()
        load_sample(db, scale=args.chunks / PER_SCALE["embeddings"], vector_indexes=False)
        print(f"loaded {args.chunks:,} chunks in {time.perf_counter() - t:.0f} s", flush=True)

        runs = measure(db, url, args)
    finally:
        api.terminate()
        cluster.stop()
        if args.home is None:  # a temporary home is not left behind (gigabytes each run)
            shutil.rmtree(home, ignore_errors=True)  # the stopped cluster with it
    report(runs)


Run = tuple[dict[str, Any], dict[str, int]]  # figures, the fake API's counters


def measure(db: str, url: str, args: argparse.Namespace) -> dict[str, Run]:
    """Each run after its own migration 005: runbook, pgdr cold, pgdr warm, the server alone."""
    runs: dict[str, Run] = {}
    migrate_005(db, args.hnsw)
    runs["runbook port"] = (
        runbook(db, url, 0 if args.skip_baseline else args.baseline_rows),
        api_stats(url),
    )
    for name in ("pgdr reembed", "pgdr reembed, cache warm"):
        migrate_005(db, args.hnsw)
        api_reset(url)
        figures = pgdr_run(db, url, args.workers, args.batch_rows, args.drop_indexes)
        runs[name] = (figures, api_stats(url))
    migrate_005(db, False)
    runs["server alone: one UPDATE from the cache"] = (server_alone(db), {"requests": 0})
    for name, (figures, calls) in runs.items():
        print(f"{name}: {json.dumps(figures)} api={calls}", flush=True)
    return runs


def _line(name: str, r: dict[str, float], calls: dict[str, int]) -> str:
    rate = r["rows"] / r["wall"]
    share = r["db"] / r["wall"]
    per_thread = r["db"] / (r["wall"] * r["threads"])
    return (
        f"| {name} | {int(r['rows']):,} | {r['wall']:.1f} | {rate:,.0f} | "
        f"{r['db']:.1f} | {share:.0%} | {per_thread:.0%} | {calls['requests']:,} |"
    )


def report(runs: dict[str, Run]) -> None:
    print()
    print(
        "| run | rows | wall s | rows/s | db s (sum) | db/wall | db/(wall x threads) "
        "| API requests |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (figures, calls) in runs.items():
        print(_line(name, figures, calls))
    print(f"\nload average {os.getloadavg()[0]:.1f} (2 cores here)")
    rate = {name: r["rows"] / r["wall"] for name, (r, _calls) in runs.items()}
    base = rate["runbook port"] if runs["runbook port"][0]["rows"] else None
    cold, warm = rate["pgdr reembed"], rate["pgdr reembed, cache warm"]
    alone = rate["server alone: one UPDATE from the cache"]
    if base:
        print(f"pgdr / runbook: {cold / base:.1f}x rows/s")
    print(f"pgdr warm / cold: {warm / cold:.1f}x rows/s")
    print(f"pgdr warm / server alone: {warm / alone:.2f}x rows/s")
    if base:
        wal = runs["server alone: one UPDATE from the cache"][0]["wal_mb"]
        print(
            f"server alone / runbook: {alone / base:.1f}x rows/s "
            f"({wal:,.0f} MB of WAL for the one UPDATE)"
        )


if __name__ == "__main__":
    main()
