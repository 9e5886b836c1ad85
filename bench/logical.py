"""Benchmark: ``pgdr dump`` against ``pg_dump -Fc``, and ``pgdr undelete`` against the runbook.

One embedded PostgreSQL 18 cluster with the ConvoAI sample (``--scale``, default 3.4: about
1,020 chatbots with their conversations, messages, embeddings and knowledge base), WAL streamed
into a local repository by the real ``pgdr wal stream``. One run of each (the machine is shared):

* dump: ``pgdr dump`` (custom format streamed into sealed chunks) and ``pgdr dump --jobs 2``
  (directory format staged, then stored) vs ``pg_dump -Fc -f FILE`` (the runbook's step 1):
  time and bytes on disk.
* undelete of 1,000 chatbots with every row that references them:
  - pgdr: ``pgdr undelete --table chatbots --key ... --yes`` (finds the deleting transaction in
    the WAL, throwaway point-in-time copy, rows back with their children);
  - the runbook's way: ``pg_restore`` of the five tables from a dump taken before the deletion
    into a scratch database, then, parents first, each table's rows of those chatbots copied
    back (``COPY (SELECT ...) TO STDOUT`` | ``COPY ... FROM STDIN``, the INSERT ... SELECT across
    databases). The dump's age is not counted for it (it was taken before the deletion; rows
    written since the dump are lost by that way, not by pgdr's).

Usage: ``PYTHONPATH=src .venv/bin/python bench/logical.py [--scale 3.4] [--keep]``
"""

from __future__ import annotations

import argparse
import json
import os
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
from pgdr.crypto.keys import generate_key_text
from pgdr.sample import load_sample

TABLES = ("chatbots", "conversations", "messages", "embeddings", "knowledge_base")
CHILD_FILTER = {
    "chatbots": "id = ANY(%(k)s::uuid[])",
    "conversations": "chatbot_id = ANY(%(k)s::uuid[])",
    "messages": "conversation_id IN (SELECT id FROM conversations"
    " WHERE chatbot_id = ANY(%(k)s::uuid[]))",
    "embeddings": "chatbot_id = ANY(%(k)s::uuid[])",
    "knowledge_base": "chatbot_id = ANY(%(k)s::uuid[])",
}


def pgdr(env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "pgdr", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"pgdr {' '.join(args[:2])} failed: {done.stderr.strip()}")
    data: dict[str, object] = json.loads(done.stdout)
    return data


def rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return sum(
            int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
            for t in TABLES
        )


def wait_streamed(env: dict[str, str], since: float) -> None:
    """Until the repository holds WAL written after ``since`` (the deletion's commit)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        done = subprocess.run(
            [sys.executable, "-m", "pgdr", "wal", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        newest = json.loads(done.stdout or "{}").get("newest_wal_at") if done.stdout else None
        if newest is not None and newest > since + 0.3:
            return
        time.sleep(1)
    raise SystemExit("the deletion's WAL did not reach the repository within 180 s")


def runbook_undelete(cluster: LocalCluster, dump: Path, keys: list[str]) -> tuple[float, float]:
    """pg_restore --table of the five tables into a scratch DB, then copy the rows back;
    (total seconds, of which pg_restore)."""
    began = time.monotonic()
    tools = cluster.installation
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE scratch")
    with psycopg.connect(cluster.conninfo("scratch"), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS extensions")  # where the sample keeps pgvector
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA extensions")
    tables = [arg for t in TABLES for arg in ("--table", t)]
    restored = subprocess.run(
        [str(tools.tool("pg_restore")), "-d", cluster.conninfo("scratch"), *tables, str(dump)],
        check=False,
        capture_output=True,
        text=True,
    )
    if restored.returncode != 0:  # pg_restore goes on after errors; say which
        print("runbook pg_restore: " + restored.stderr.strip().splitlines()[-1])
    restore_s = time.monotonic() - began
    with (
        psycopg.connect(cluster.conninfo("scratch")) as src,
        psycopg.connect(cluster.conninfo()) as dst,
    ):
        for table in TABLES:
            query = f"SELECT * FROM {table} WHERE {CHILD_FILTER[table]}"
            selected = psycopg.ClientCursor(src).mogrify(query, {"k": keys})
            with (
                src.cursor().copy(f"COPY ({selected}) TO STDOUT") as reader,
                dst.cursor().copy(f"COPY {table} FROM STDIN") as writer,
            ):
                for data in reader:
                    writer.write(data)
        dst.commit()
    return time.monotonic() - began, restore_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=3.4)
    parser.add_argument("--keep", action="store_true")
    options = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="pgdr-bench-logical-", dir="/tmp"))
    home.chmod(0o711)
    settings = PgdrSettings(home=home)
    cluster = LocalCluster(home / "clusters" / "bench", settings)
    cluster.create(choose_installation(None, 18))
    cluster.set_config("wal_level = replica\n")
    cluster.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env |= {
        "PGDR_HOME": str(home),
        "PGDR_REPO": str(home / "repo"),
        "PGDR_ENCRYPTION_KEY": generate_key_text(),
        "DATABASE_URL": cluster.conninfo(),
    }
    stream = None
    try:
        load_sample(cluster.conninfo(), scale=options.scale)
        total = rows(cluster.conninfo())
        plain = home / "plain.dump"
        began = time.monotonic()
        subprocess.run(
            [
                str(cluster.installation.tool("pg_dump")),
                "-Fc",
                "-f",
                str(plain),
                cluster.conninfo(),
            ],
            check=True,
        )
        pg_dump_s = time.monotonic() - began
        plain_bytes = plain.stat().st_size
        began = time.monotonic()
        made = pgdr(env, "dump")
        pgdr_dump_s = time.monotonic() - began
        began = time.monotonic()
        parallel = pgdr(env, "dump", "--jobs", "2")
        jobs_dump_s = time.monotonic() - began

        log = (home / "stream.log").open("wb")
        stream = subprocess.Popen(
            [sys.executable, "-m", "pgdr", "wal", "stream"], env=env, stdout=log, stderr=log
        )
        time.sleep(5)
        pgdr(env, "backup")
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            keys = [
                str(r[0])
                for r in conn.execute("SELECT id FROM chatbots ORDER BY id LIMIT 1000").fetchall()
            ]
            conn.execute("DELETE FROM chatbots WHERE id = ANY(%s::uuid[])", (keys,))
            conn.execute("SELECT pg_switch_wal()")
        deleted_at = time.time()
        after_delete = rows(cluster.conninfo())
        wait_streamed(env, deleted_at)
        began = time.monotonic()
        undone = pgdr(
            env, "undelete", "--table", "chatbots", *[f"--key={k}" for k in keys], "--yes"
        )
        undelete_s = time.monotonic() - began
        restored = rows(cluster.conninfo())
        print(
            f"pgdr: dump {pgdr_dump_s:.1f} s vs pg_dump -Fc {pg_dump_s:.1f} s; undelete of "
            f"{len(keys):,} chatbots {undelete_s:.1f} s (wal find {undone['find_s']:.1f} s, "
            f"throwaway copy's recovery {undone['restore_s']:.1f} s, "
            f"rows {undone['rows_s']:.1f} s; "
            f"{sum(undone['inserted'].values()):,} rows put back)",  # type: ignore[attr-defined]
            flush=True,
        )
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            conn.execute("DELETE FROM chatbots WHERE id = ANY(%s::uuid[])", (keys,))
        runbook_s, runbook_restore_s = runbook_undelete(cluster, plain, keys)
        runbook_rows = rows(cluster.conninfo())
    finally:
        if stream is not None:
            stream.send_signal(signal.SIGTERM)
            stream.wait(60)
        if not options.keep:
            cluster.destroy()
            shutil.rmtree(home, ignore_errors=True)
    print(f"scale {options.scale}: {total:,} rows in the five tables, {len(keys):,} chatbots")
    print(
        f"rows: before {total:,}, after the deletion {after_delete:,}, "
        f"pgdr undelete {restored:,}, runbook way {runbook_rows:,}"
    )
    print("| step | pgdr | runbook | ratio (pgdr / runbook) |")
    print("| --- | --- | --- | --- |")
    print(
        f"| dump time | {pgdr_dump_s:.1f} s | {pg_dump_s:.1f} s | {pgdr_dump_s / pg_dump_s:.2f} |"
    )
    stored = int(made["stored_size"])  # type: ignore[call-overload]
    print(f"| dump bytes | {stored:,} | {plain_bytes:,} | {stored / plain_bytes:.2f} |")
    print(
        f"| dump --jobs 2 (directory format) time | {jobs_dump_s:.1f} s | {pg_dump_s:.1f} s "
        f"| {jobs_dump_s / pg_dump_s:.2f} |"
    )
    stored_jobs = int(parallel["stored_size"])  # type: ignore[call-overload]
    print(
        f"| dump --jobs 2 bytes | {stored_jobs:,} | {plain_bytes:,} "
        f"| {stored_jobs / plain_bytes:.2f} |"
    )
    print(
        f"| undelete 1,000 chatbots + children | {undelete_s:.1f} s | {runbook_s:.1f} s "
        f"| {undelete_s / runbook_s:.2f} |"
    )
    print(f"runbook way: pg_restore of the five tables {runbook_restore_s:.1f} s, then copy back")


if __name__ == "__main__":
    main()
