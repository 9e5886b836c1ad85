"""Restores that cannot finish: a full disk, a repository that is not writable.

Each ends in one sentence and exit 3, leaves the place it wrote into as it found it (no
staging, no half-written data directory, no cluster directory), and the repository untouched.
A full disk is a small tmpfs: too small for the restore (refused before writing) or with too
few inodes (the restore fails half-way, after the space check passed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import run_cli
from fixtures.wal import WalEnv
from test_restore_pitr_trust import streamed_backup


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    path.chmod(0o711)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _failed(result: object, *fragments: str) -> None:
    code, stderr = result.code, result.stderr  # type: ignore[attr-defined]
    assert code == 3, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in stderr and len(errors) == 1, stderr  # log lines may precede it
    message = " ".join(stderr[stderr.index("error:") :].split())
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.slow
def test_disk_full_and_read_only_repository(walenv18: WalEnv, scratch: Path) -> None:
    w = walenv18
    backup_id = streamed_backup(w)
    clusters = w.cluster.settings.home / "clusters"
    before = set(clusters.iterdir())

    with tmpfs(scratch / "tiny", "size=2m") as mount:
        _failed(w.cli("restore", backup_id, "--to", str(mount / "d")), "needs about", "MiB free")
        _failed(w.cli("restore", "--latest", "--to", str(mount / "d")), "needs about")
        assert list(mount.iterdir()) == []

    with tmpfs(scratch / "inodes", "size=512m,nr_inodes=300") as mount:
        _failed(w.cli("restore", backup_id, "--to", str(mount / "d")), "is full")
        assert list(mount.iterdir()) == []
        _failed(w.cli("restore", "--latest", "--to", str(mount / "d")), "is full")
        assert list(mount.iterdir()) == []
    assert set(clusters.iterdir()) == before

    with tmpfs(scratch / "ro", "size=256m") as mount:
        shutil.copytree(w.repo, mount / "repo")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        env = w.env | {"PGDR_REPO": str(mount / "repo")}
        target = scratch / "from-ro"
        result = run_cli("restore", "--latest", "--to", str(target), env=env)
        _failed(result, "not writable", "records the new timeline there", "nothing was restored")
        assert not target.exists()
        # a base restore only reads the repository: it works from a read-only one
        base = run_cli("restore", backup_id, "--to", str(target), "--json", env=env)
        assert base.code == 0, base.stderr
        assert json.loads(base.stdout)["backup_id"] == backup_id
    assert set(clusters.iterdir()) == before
