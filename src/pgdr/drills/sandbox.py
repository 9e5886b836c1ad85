"""The drill sandbox: a production cluster, a repository, a WAL streamer and a workload.

Everything lives under ``$PGDR_HOME/drills/<drill id>/``: ``clusters/production`` (the database
the disaster hits) and the clusters recoveries create, ``repo/`` with its own master key in
``key/``, the streamer's spool and log. The streamer is the real ``pgdr wal stream`` process;
the workload writer is a thread of the drill. ``close()`` stops and removes all of it, unless
the drill keeps it for inspection. The user's own databases and repositories are never used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pgdr.backup import Manifest, Repository, repository_at
from pgdr.backup.take import take_backup
from pgdr.cluster import LocalCluster, choose_installation
from pgdr.config import PgdrSettings
from pgdr.core import runner
from pgdr.core.connect import connect
from pgdr.core.errors import RuntimeFailure
from pgdr.crypto import MasterKey
from pgdr.crypto.keys import decode_key, generate_key_text, write_key_file
from pgdr.drills.workload import WorkloadWriter
from pgdr.restore.pitr import PitrResult, plan_pitr, run_pitr, wait_for_streamer
from pgdr.restore.target import Target
from pgdr.sample import VectorType, load_sample
from pgdr.wal.archive import WalArchive, repository_archive
from pgdr.wal.status import newest_wal_time

DATABASE = "convoai"
STREAM_WAIT_S = 60.0


class Sandbox:
    """One drill's world; the "production" database is ``production`` on ``clusters/``."""

    def __init__(self, settings: PgdrSettings, drill_id: str, major: int, scale: float) -> None:
        self.settings = settings
        self.major = major
        self.scale = scale
        self.root = settings.home / "drills" / drill_id
        self.repo_dir = self.root / "repo"
        self.key_file = self.root / "key" / "master.key"
        self.spool = self.root / "wal-spool"
        self.records = self.root / "records"
        self.production = LocalCluster(self.root / "clusters" / "production", settings)
        self.streamer: runner.Process | None = None
        self.writer: WorkloadWriter | None = None
        self._repo: Repository | None = None

    # ----- set-up ---------------------------------------------------------------------------
    def create(self) -> None:
        """The production cluster with the sample, the repository and its key."""
        for path in (self.settings.home, self.settings.home / "drills", self.root):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o711)
        key_text = generate_key_text()
        write_key_file(self.key_file, key_text)
        repo = repository_at(str(self.repo_dir), self.settings, name="primary")
        repo.use_master_key(MasterKey(decode_key(key_text, "drill"), "drill"))
        repo.ensure_initialised()
        self._repo = repo
        self.production.create(choose_installation(None, self.major))
        self.production.start()
        with connect(self.production.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        vectors = VectorType.VECTOR if self.major >= 18 else VectorType.ARRAY
        load_sample(self.url, scale=self.scale, vector_type=vectors)
        self.writer = WorkloadWriter(self.url)
        self.writer.prepare()

    @property
    def url(self) -> str:
        """The production database (ConvoAI) over the cluster's unix socket."""
        return self.production.conninfo(DATABASE)

    @property
    def repo(self) -> Repository:
        if self._repo is None:
            raise RuntimeFailure("The drill's repository was not created.")
        return self._repo

    def env(self, database_url: str | None = None) -> dict[str, str]:
        """The environment for a real ``pgdr`` process working inside the sandbox."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not (k.startswith(("PG", "DB_")) or k == "DATABASE_URL")
        }
        env |= {
            "PGDR_HOME": str(self.settings.home),
            "PGDR_REPO": str(self.repo_dir),
            "PGDR_ENCRYPTION_KEY_FILE": str(self.key_file),
            "DATABASE_URL": database_url or self.url,
        }
        return env

    def backup(self) -> Manifest:
        return take_backup(self.repo, self.url, label="drill")

    def start_streamer(self) -> None:
        with (self.root / "streamer.log").open("ab") as logfile:
            self.streamer = runner.start(
                [sys.executable, "-m", "pgdr", "wal", "stream", "--spool", self.spool],
                env=self.env(),
                stdout=logfile,
                stderr=subprocess.STDOUT,
            )

    def stop_streamer(self) -> None:
        if self.streamer is not None:
            runner.stop(self.streamer, grace_s=30)

    def archive(self) -> WalArchive:
        return repository_archive(self.repo)

    def wait_streamed(self, since: float | None = None, timeout: float = STREAM_WAIT_S) -> None:
        """Until the repository holds WAL read after ``since`` (default: now)."""
        since = time.time() if since is None else since
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.streamer is not None and self.streamer.poll() is not None:
                raise RuntimeFailure(f"The WAL streamer exited; see {self.root / 'streamer.log'}.")
            with contextlib.suppress(Exception):
                newest = newest_wal_time(self.archive())
                if newest is not None and newest > since:
                    return
            time.sleep(0.2)
        raise RuntimeFailure(f"No WAL reached the repository within {timeout:g} s.")

    def start_workload(self) -> WorkloadWriter:
        if self.writer is None:
            raise RuntimeFailure("The drill's production database was not created.")
        self.writer.start()
        self.writer.wait_for_ticks(10)
        return self.writer

    # ----- recovery -------------------------------------------------------------------------
    def restore(self, target: Target, name: str) -> tuple[LocalCluster, PitrResult]:
        """Point-in-time restore into a new cluster ``clusters/<name>``, left running."""
        archive = self.archive()
        if target.kind == "latest":
            wait_for_streamer(archive)
        plan = plan_pitr(self.repo, archive, target, None, None)
        cluster_dir = self.root / "clusters" / name
        result = run_pitr(
            self.repo, archive, plan, cluster_dir / "data", cluster_dir, keep_running=True
        )
        return LocalCluster(cluster_dir, self.settings), result

    # ----- tear-down ------------------------------------------------------------------------
    def close(self, keep: bool) -> None:
        """Stop the workload and the streamer; unless ``keep``, stop and remove every cluster."""
        if self.writer is not None:
            self.writer.stop()
        self.stop_streamer()
        if not keep:
            remove_sandbox(self.settings, self.root)


def kept_sandboxes(settings: PgdrSettings) -> list[Path]:
    base = settings.home / "drills"
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def remove_sandbox(settings: PgdrSettings, root: Path) -> None:
    """Stop and delete every cluster of a sandbox, then the sandbox itself."""
    clusters = root / "clusters"
    if clusters.is_dir():
        for directory in sorted(clusters.iterdir()):
            with contextlib.suppress(Exception):
                LocalCluster(directory, settings).destroy()
    shutil.rmtree(root, ignore_errors=True)
