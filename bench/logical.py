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
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def pgdr(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "pgdr", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"pgdr {' '.join(args[:2])} failed: {done.stderr.strip()}")
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def rows(url: str) -> int:
    total = 0
    with psycopg.connect(url) as conn:
        for table in TABLES:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert row is not None
            total += int(row[0])
    return total


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


def timed_s(func: Callable[[], object]) -> tuple[float, Any]:
    began = time.monotonic()
    result = func()
    return time.monotonic() - began, result


def dumps(cluster: LocalCluster, env: dict[str, str], home: Path) -> dict[str, Any]:
    """``pg_dump -Fc`` (the runbook's step 1, kept for its undelete), ``pgdr dump``, ``--jobs``."""
    plain = home / "plain.dump"
    pg_dump = [str(cluster.installation.tool("pg_dump")), "-Fc", "-f", str(plain)]
    pg_dump_s, _ = timed_s(lambda: subprocess.run([*pg_dump, cluster.conninfo()], check=True))
    pgdr_dump_s, made = timed_s(lambda: pgdr(env, "dump"))
    jobs_dump_s, parallel = timed_s(lambda: pgdr(env, "dump", "--jobs", "2"))
    return {
        "plain": plain,
        "pg_dump_s": pg_dump_s,
        "plain_bytes": plain.stat().st_size,
        "pgdr_dump_s": pgdr_dump_s,
        "stored": int(made["stored_size"]),
        "jobs_dump_s": jobs_dump_s,
        "stored_jobs": int(parallel["stored_size"]),
    }


def undeletes(cluster: LocalCluster, env: dict[str, str], plain: Path) -> dict[str, Any]:
    """Delete 1,000 chatbots; ``pgdr undelete`` them; delete them again; the runbook's way."""
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
    command = ["undelete", "--table", "chatbots", *[f"--key={k}" for k in keys], "--yes"]
    undelete_s, undone = timed_s(lambda: pgdr(env, *command))
    restored = rows(cluster.conninfo())
    print(
        f"pgdr: undelete of {len(keys):,} chatbots {undelete_s:.1f} s (wal find "
        f"{undone['find_s']:.1f} s, throwaway copy's recovery {undone['restore_s']:.1f} s, "
        f"rows {undone['rows_s']:.1f} s; {sum(undone['inserted'].values()):,} rows put back)",
        flush=True,
    )
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("DELETE FROM chatbots WHERE id = ANY(%s::uuid[])", (keys,))
    runbook_s, runbook_restore_s = runbook_undelete(cluster, plain, keys)
    return {
        "keys": len(keys),
        "after_delete": after_delete,
        "undelete_s": undelete_s,
        "restored": restored,
        "runbook_s": runbook_s,
        "runbook_restore_s": runbook_restore_s,
        "runbook_rows": rows(cluster.conninfo()),
    }


def measure(cluster: LocalCluster, env: dict[str, str], home: Path, scale: float) -> dict[str, Any]:
    """Load the sample, time the dumps, stream WAL, back up, time the undeletes."""
    load_sample(cluster.conninfo(), scale=scale)
    figures = {"total": rows(cluster.conninfo())} | dumps(cluster, env, home)
    log = (home / "stream.log").open("wb")
    stream = subprocess.Popen(
        [sys.executable, "-m", "pgdr", "wal", "stream"], env=env, stdout=log, stderr=log
    )
    try:
        time.sleep(5)
        pgdr(env, "backup")
        figures |= undeletes(cluster, env, figures["plain"])
    finally:
        stream.send_signal(signal.SIGTERM)
        stream.wait(60)
    return figures


def report(f: dict[str, Any], scale: float) -> None:
    print(f"scale {scale}: {f['total']:,} rows in the five tables, {f['keys']:,} chatbots")
    print(
        f"rows: before {f['total']:,}, after the deletion {f['after_delete']:,}, "
        f"pgdr undelete {f['restored']:,}, runbook way {f['runbook_rows']:,}"
    )
    print("| step | pgdr | runbook | ratio (pgdr / runbook) |")
    print("| --- | --- | --- | --- |")
    pg_dump_s, plain_bytes = f["pg_dump_s"], f["plain_bytes"]
    for step, ours, theirs, unit in (
        ("dump time", f["pgdr_dump_s"], pg_dump_s, "s"),
        ("dump bytes", f["stored"], plain_bytes, ""),
        ("dump --jobs 2 (directory format) time", f["jobs_dump_s"], pg_dump_s, "s"),
        ("dump --jobs 2 bytes", f["stored_jobs"], plain_bytes, ""),
        (f"undelete {f['keys']:,} chatbots + children", f["undelete_s"], f["runbook_s"], "s"),
    ):
        cells = (f"{ours:.1f} s", f"{theirs:.1f} s") if unit else (f"{ours:,}", f"{theirs:,}")
        print(f"| {step} | {cells[0]} | {cells[1]} | {ours / theirs:.2f} |")
    print(
        f"runbook way: pg_restore of the five tables {f['runbook_restore_s']:.1f} s, then copy back"
    )


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
    try:
        figures = measure(cluster, env, home, options.scale)
    finally:
        if not options.keep:
            cluster.destroy()
            shutil.rmtree(home, ignore_errors=True)
    report(figures, options.scale)


if __name__ == "__main__":
    main()
