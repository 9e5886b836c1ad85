"""Restored data directories start with their own configuration; clusters restores made are
managed with ``pgdr cluster``; the embedded default is restored in place after its loss, and
``pgdr db start`` / ``pgdr health`` never offer an empty database where one existed.

The two walkthroughs of docs/backups.md, against real PostgreSQL 18:

* restore onto a replacement host: the source is gone, its directory restored with
  ``restore --latest --to DIR`` is started by a plain ``pg_ctl`` with its own configuration;
* restore the embedded default in place: ``db start`` refuses, the restore puts the data back,
  ``db start`` starts it on the port it reports.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run_cli
from fixtures.backup import add_rows, count_rows
from fixtures.wal import WalEnv
from pgdr.cluster import LocalCluster
from pgdr.cluster.runtime import RUNTIME, runtime_lock
from pgdr.config import PgdrSettings
from pgdr.restore.scratch import as_found
from test_pitr import backup, ids, wait_streamed

CONFIG_FILES = ("postgresql.conf", "postgresql.auto.conf", "pg_hba.conf")


def _config(data_dir: Path) -> dict[str, bytes]:
    return {name: (data_dir / name).read_bytes() for name in CONFIG_FILES}


@pytest.mark.slow
def test_replacement_host_and_managed_clusters(walenv18: WalEnv, scratch: Path) -> None:
    w = walenv18
    stream = w.start_stream()
    w.insert(10)
    backup_id = backup(w)
    w.insert(10)
    wait_streamed(w)
    w.stop_stream(stream)
    original = _config(w.cluster.data_dir)
    everything = ids(w.conninfo)

    # A base restore and a point-in-time restore into DIR: the original configuration, as is.
    base = w.cli("restore", backup_id, "--to", str(scratch / "base"))
    assert base.code == 0, base.stderr
    assert _config(scratch / "base") == original
    pitr = w.cli("restore", "--latest", "--to", str(scratch / "host"), "--json")
    assert pitr.code == 0, pitr.stderr
    host = scratch / "host"
    assert _config(host) == original
    assert not (host / "pgdr-recovery.conf").exists() and not (host / "recovery.signal").exists()
    assert json.loads(pitr.stdout)["cluster_dir"] is None  # no pgdr cluster left behind

    # A cluster made by --new-cluster: listed, stopped, started, its URL, removed.
    made = w.cli("restore", "--latest", "--new-cluster", "--json")
    assert made.code == 0, made.stderr
    name = Path(json.loads(made.stdout)["cluster_dir"]).name
    listed = json.loads(w.cli("cluster", "list", "--json").stdout)["clusters"]
    assert {"name": name, "running": True}.items() <= next(
        c for c in listed if c["name"] == name
    ).items()
    assert w.cli("cluster", "stop", name).code == 0
    started = w.cli("cluster", "start", name, "--json")
    assert started.code == 0, started.stderr
    url = w.cli("cluster", "url", name).stdout.strip()
    assert ids(url) == everything
    made_dir = w.cluster.settings.home / "clusters" / name
    assert _config(made_dir / "data") == original  # pgdr's settings live in its command line
    removed = w.cli("cluster", "rm", name, "--yes")
    assert removed.code == 0, removed.stderr
    assert not made_dir.exists()
    assert w.cli("cluster", "rm", "default", "--yes").code == 2

    # The replacement host: the source is gone; a plain pg_ctl starts DIR with its own config.
    w.cluster.stop()
    pg_ctl = w.cluster.installation.tool("pg_ctl")
    user = w.cluster.user
    log = scratch / "host.log"
    log.touch()
    user.own(log, 0o600)
    started_plain = user.run([pg_ctl, "-D", host, "-l", log, "-w", "start"], timeout=120)
    assert started_plain.returncode == 0, log.read_text()
    try:
        assert ids(w.conninfo) == everything  # the original's port and socket directory
    finally:
        user.run([pg_ctl, "-D", host, "-m", "fast", "-w", "stop"], timeout=120)
    w.cluster.start()


@pytest.fixture
def own_home(cli_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """An environment with its own PGDR_HOME, so the embedded default is this test's."""
    home = Path(tempfile.mkdtemp(prefix="pgdr-home-", dir="/tmp"))
    home.chmod(0o711)
    env = cli_env | {"PGDR_HOME": str(home), "PGDR_REPO": str(home / "repo")}
    yield env
    settings = PgdrSettings(home=home)
    for meta in home.glob("clusters/*/cluster.json"):
        cluster = LocalCluster(meta.parent, settings)
        if cluster.exists and cluster.status().running:
            cluster.stop("immediate")
    shutil.rmtree(home, ignore_errors=True)


def _one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.slow
def test_embedded_default_restored_in_place(own_home: dict[str, str]) -> None:
    env = own_home
    home = Path(env["PGDR_HOME"])
    data = home / "clusters" / "default" / "data"
    assert run_cli("db", "start", "--pg-version", "18", env=env).code == 0
    url = run_cli("db", "url", env=env).stdout.strip()
    add_rows(url, "precious", 500)
    assert run_cli("backup", env=env).code == 0, "backup"
    assert run_cli("db", "stop", env=env).code == 0

    for lost in (data, data.parent):  # the data directory, then the whole cluster directory
        shutil.rmtree(lost)
        health = run_cli("health", env=env)
        assert health.code != 0 and "Traceback" not in health.stderr
        advice = _one_line(health.stdout + health.stderr)
        assert "pgdr restore --latest --to" in advice and "is gone" in advice
        refused = run_cli("db", "start", env=env)
        assert refused.code == 2, refused.stdout + refused.stderr
        assert f"pgdr restore --latest --to {data}" in _one_line(refused.stderr)
        assert not data.exists()

        restored = run_cli("restore", "latest", "--to", str(data), env=env)
        assert restored.code == 0, restored.stderr
        started = run_cli("db", "start", "--json", env=env)
        assert started.code == 0, started.stderr
        status = json.loads(run_cli("db", "status", "--json", env=env).stdout)
        url = run_cli("db", "url", env=env).stdout.strip()
        assert f"port={status['port']}" in url and count_rows(url, "precious") == 500
        assert run_cli("health", env=env).code == 0
        assert run_cli("db", "stop", env=env).code == 0

    shutil.rmtree(data)
    fresh = run_cli("db", "start", "--new", "--json", env=env)
    assert fresh.code == 0 and json.loads(fresh.stdout)["created"] is True


def test_a_staged_copy_that_another_cluster_takes_into_use_stays(tmp_path: Path) -> None:
    """A read throwaway removes the copy of PostgreSQL it staged under runtime/ (a service user
    who cannot reach the installed one). Another process that started a cluster from that copy
    meanwhile lost its binaries on disk: its next `pg_ctl` failed. The removal now waits for a
    cluster that is taking the copy into use (shared lock until its cluster.json names it) and
    leaves the copy to any cluster that runs from it. A home of its own: the session's may
    hold a staged copy its clusters run from (a clone under a 0700 directory)."""
    settings = PgdrSettings(home=tmp_path / "home")
    settings.home.mkdir()
    home = settings.home
    staged_bin = home / RUNTIME / "postgres-18.0" / "bin"
    other = home / "clusters" / "other"
    taking, recorded = threading.Event(), threading.Event()

    def take_into_use() -> None:  # what LocalCluster.create/adopt does, slowly
        with runtime_lock(home, exclusive=False):
            taking.set()
            time.sleep(1.0)
            other.mkdir(parents=True)
            (other / "cluster.json").write_text(json.dumps({"bin_dir": str(staged_bin)}))
            recorded.set()

    with as_found(settings, "A test"):
        staged_bin.mkdir(parents=True)  # this throwaway staged the copy
        taker = threading.Thread(target=take_into_use)
        taker.start()
        assert taking.wait(10)
    assert recorded.is_set()  # the removal waited for the shared lock
    taker.join()
    assert staged_bin.is_dir()  # and left the copy to the cluster that runs from it

    shutil.rmtree(other)
    shutil.rmtree(home / RUNTIME)
    with as_found(settings, "A test"):
        staged_bin.mkdir(parents=True)
    assert not (home / RUNTIME).exists()  # nobody else used it: removed as before
