"""Shared test fixtures: real PostgreSQL clusters started once per session.

Every test that needs a database gets a fresh one, created from a template that already holds
the ConvoAI sample, so tests are isolated and the suite stays fast. Clusters live under a
temporary PGDR_HOME in /tmp that the unprivileged service user can traverse.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from pgdr.cluster import LocalCluster, choose_installation, find_installations
from pgdr.config import PgdrSettings
from pgdr.sample import VectorType, load_sample

pytest_plugins = [
    "fixtures.agent",
    "fixtures.backup",
    "fixtures.embeddings",
    "fixtures.patroni",
    "fixtures.receivers",
    "fixtures.s3",
    "fixtures.wal",
]

TEMPLATE = "convoai_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pgdr_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="pgdr-test-", dir="/tmp"))
    home.chmod(0o711)
    yield home
    for cluster_dir in (home / "clusters").glob("*"):
        LocalCluster(cluster_dir, PgdrSettings(home=home)).destroy()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(pgdr_home: Path) -> PgdrSettings:
    return PgdrSettings(home=pgdr_home)


@dataclass
class Server:
    """A running test cluster and a way to hand out fresh databases on it."""

    cluster: LocalCluster
    template: str | None

    @property
    def major(self) -> int:
        return self.cluster.installation.major

    def new_database(self, template: str | None = None) -> str:
        name = f"t{os.getpid()}_{next(_counter)}"
        source = template or self.template or "template1"
        with psycopg.connect(self.cluster.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
        return self.cluster.conninfo(name)


def _start_server(settings: PgdrSettings, name: str, major: int, vector: VectorType) -> Server:
    cluster = LocalCluster(settings.home / "clusters" / name, settings)
    cluster.create(choose_installation(None, major))
    cluster.start()
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    load_sample(cluster.conninfo(TEMPLATE), scale=0.01, vector_type=vector)
    return Server(cluster, TEMPLATE)


def _has_major(major: int) -> bool:
    return any(i.major == major for i in find_installations())


@pytest.fixture(scope="session")
def pg18(settings: PgdrSettings) -> Server:
    """The embedded PostgreSQL 18 with pgvector and a ConvoAI template database."""
    return _start_server(settings, "pg18", 18, VectorType.VECTOR)


@pytest.fixture(scope="session")
def pg15(settings: PgdrSettings) -> Server:
    """Debian's PostgreSQL 15 (no pgvector: the template stores vectors as real[])."""
    if not _has_major(15):
        pytest.skip("Debian's PostgreSQL 15 is not installed")
    return _start_server(settings, "pg15", 15, VectorType.ARRAY)


@pytest.fixture(params=["pg18", "pg15"])
def server(request: pytest.FixtureRequest) -> Server:
    """Runs a test once on each PostgreSQL version."""
    server: Server = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def db18(pg18: Server) -> str:
    """A fresh database with the ConvoAI sample on PostgreSQL 18."""
    return pg18.new_database()


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli_env(pgdr_home: Path) -> dict[str, str]:
    """A clean environment for running the real `pgdr` executable."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(("PG", "DB_")) or k == "DATABASE_URL")
    }
    env["PGDR_HOME"] = str(pgdr_home)
    env["COLUMNS"] = "200"
    return env


def run_cli(
    *args: str,
    env: dict[str, str],
    timeout: float = 300,
    input: str | None = None,
    cwd: Path | None = None,
) -> CliResult:
    """Run `python -m pgdr ARGS` as a real process (in ``cwd``) and capture everything."""
    proc = subprocess.run(
        [sys.executable, "-m", "pgdr", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
