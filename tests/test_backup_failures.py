"""Backups that fail half-way: pgdr killed, a full disk, a read-only repository.

Each ends in one sentence and a non-zero exit, lists no incomplete backup, and leaves earlier
backups intact and restorable. Uses a small dedicated cluster so sizes are predictable.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import run_cli
from fixtures.backup import add_rows
from pgdr.cluster import LocalCluster, choose_installation
from pgdr.config import PgdrSettings
from pgdr.storage.lock import LOCAL_LOCK_NAME


@pytest.fixture(scope="module")
def small_pg(settings: PgdrSettings) -> Iterator[LocalCluster]:
    cluster = LocalCluster(settings.home / "clusters" / "backup-small", settings)
    cluster.create(choose_installation(None, 18))
    cluster.start()
    add_rows(cluster.conninfo(), "payload", 20000)
    yield cluster
    cluster.destroy()


@contextmanager
def tmpfs(path: Path, size_kb: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_killed_at_random_points(
    small_pg: LocalCluster, backup_env: dict[str, str], scratch: Path
) -> None:
    env = backup_env | {"DATABASE_URL": small_pg.conninfo()}
    first = run_cli("backup", "--json", env=env)
    assert first.code == 0, first.stderr
    first_id = json.loads(first.stdout)["id"]
    rng = random.Random(4)
    killed = 0
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgdr", "backup"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    assert killed >= 2  # most runs are cut short somewhere
    listed = json.loads(run_cli("backup", "list", "--json", env=env).stdout)["backups"]
    assert first_id in [b["id"] for b in listed]
    verify = run_cli("backup", "verify", "--all", env=env)
    assert verify.code == 0, verify.stdout + verify.stderr  # only complete backups are listed

    after = run_cli("backup", "--json", env=env)
    assert after.code == 0, after.stderr  # a dead process's lock is stale, not a blocker
    info = json.loads(run_cli("repo", "info", "--json", env=env).stdout)
    assert info["incomplete"] == [] and info["lock"] is None
    restored = run_cli("restore", first_id, "--to", str(scratch / "r"), env=env)
    assert restored.code == 0, restored.stderr


def test_live_lock_blocks_a_second_writer(
    small_pg: LocalCluster, backup_env: dict[str, str]
) -> None:
    env = backup_env | {"DATABASE_URL": small_pg.conninfo()}
    assert run_cli("repo", "init", env=env).code == 0
    # Another process holds the repository's flock and describes itself in lock.json.
    repo = Path(env["PGDR_REPO"])
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import filelock, sys, time; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); "
            "print('held', flush=True); time.sleep(60)",
            str(repo / LOCAL_LOCK_NAME),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        (repo / "lock.json").write_text(
            json.dumps(
                {
                    "pid": holder.pid,
                    "host": __import__("socket").gethostname(),
                    "operation": "backup",
                    "started_at": time.time(),
                    "refreshed_at": time.time(),
                }
            )
        )
        result = run_cli("backup", env=env)
        assert result.code == 3
        assert "is busy: backup by process" in _one_line(result.stderr)
    finally:
        holder.kill()
        holder.wait()
    assert run_cli("backup", env=env).code == 0


def test_disk_full(small_pg: LocalCluster, backup_env: dict[str, str], scratch: Path) -> None:
    probe_env = backup_env | {"DATABASE_URL": small_pg.conninfo()}
    probe = json.loads(run_cli("backup", "--json", env=probe_env).stdout)
    size_kb = int(probe["stored_size"] * 1.5 / 1024) + 64
    with tmpfs(scratch / "full", size_kb) as mount:
        env = probe_env | {"PGDR_REPO": str(mount / "repo")}
        first = run_cli("backup", "--json", env=env)
        assert first.code == 0, first.stderr
        first_id = json.loads(first.stdout)["id"]
        second = run_cli("backup", env=env)
        assert second.code == 3
        message = _one_line(second.stderr)
        assert "is full" in message and "earlier backups are intact" in message
        assert "Traceback" not in second.stderr
        listed = json.loads(run_cli("backup", "list", "--json", env=env).stdout)["backups"]
        assert [b["id"] for b in listed] == [first_id]
        assert json.loads(run_cli("repo", "info", "--json", env=env).stdout)["incomplete"] == []
        assert run_cli("backup", "verify", env=env).code == 0
        restored = run_cli("restore", first_id, "--to", str(scratch / "r"), env=env)
        assert restored.code == 0, restored.stderr


def test_repository_not_writable(
    small_pg: LocalCluster, backup_env: dict[str, str], scratch: Path
) -> None:
    with tmpfs(scratch / "ro", 64 * 1024) as mount:
        env = backup_env | {"DATABASE_URL": small_pg.conninfo(), "PGDR_REPO": str(mount / "repo")}
        first = run_cli("backup", "--json", env=env)
        assert first.code == 0, first.stderr
        first_id = json.loads(first.stdout)["id"]
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        second = run_cli("backup", env=env)
        assert second.code == 3
        assert "is not writable" in _one_line(second.stderr)
        assert len(second.stderr.strip().splitlines()) <= 2
        assert [
            b["id"]
            for b in json.loads(run_cli("backup", "list", "--json", env=env).stdout)["backups"]
        ] == [first_id]
        restored = run_cli("restore", first_id, "--to", str(scratch / "r"), env=env)
        assert restored.code == 0, restored.stderr
