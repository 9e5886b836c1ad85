"""The cluster manager against real PostgreSQL 18 (embedded) and 15 (Debian)."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from conftest import Server, run_cli
from pgdr.cluster import LocalCluster, choose_installation, find_installations
from pgdr.cluster.registry import remove_cluster
from pgdr.cluster.service_user import resolve_service_user
from pgdr.config import PgdrSettings
from pgdr.core.errors import ConfigError, RuntimeFailure
from test_bad_input import assert_one_sentence


def test_cluster_runs_with_checksums_socket_and_tcp(server: Server) -> None:
    cluster = server.cluster
    with psycopg.connect(cluster.conninfo()) as conn:
        row = conn.execute("SHOW data_checksums").fetchone()
        assert row == ("on",)
        user = conn.execute("SELECT usename FROM pg_user WHERE usesuper LIMIT 1").fetchone()
        assert user == ("postgres",)
    # TCP needs the generated password: without it the server refuses.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.tcp_url(), connect_timeout=5).close()
    with psycopg.connect(cluster.tcp_url(with_password=True), connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    status = cluster.status()
    assert status.running and status.port == cluster.port


def test_server_runs_as_unprivileged_user(server: Server) -> None:
    pid = server.cluster.status().pid
    assert pid is not None
    uid = os.stat(f"/proc/{pid}").st_uid
    assert uid != 0


def test_both_versions_are_found() -> None:
    majors = {i.major for i in find_installations()}
    assert 18 in majors
    assert 15 in majors


def test_missing_installation_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not contain a working postgres"):
        choose_installation(tmp_path / "nope")
    with pytest.raises(ConfigError, match="No PostgreSQL 9 installation"):
        choose_installation(None, 9)


def test_lifecycle_port_in_use_and_stale_pid(settings: PgdrSettings) -> None:
    cluster = LocalCluster(settings.home / "clusters" / "life", settings)
    cluster.create(choose_installation(None, 18))
    try:
        assert not cluster.status().running
        # Something else holds the port: a clear error, and the cluster is untouched.
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", cluster.port))
            holder.listen()
            with pytest.raises(ConfigError, match=f"Port {cluster.port} is already in use"):
                cluster.start()
        cluster.start()
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE keep (x int); INSERT INTO keep VALUES (7)")
        # A crash leaves postmaster.pid behind; start must recover without losing data.
        cluster.kill()
        assert (cluster.data_dir / "postmaster.pid").exists()
        assert not cluster.status().running
        cluster.start()
        with psycopg.connect(cluster.conninfo()) as conn:
            assert conn.execute("SELECT x FROM keep").fetchone() == (7,)
        # A pid file naming a live process that is not postgres is moved aside, not trusted.
        cluster.stop()
        (cluster.data_dir / "postmaster.pid").write_text(f"{os.getpid()}\n{cluster.data_dir}\n")
        notes = cluster.start()
        assert any("stale postmaster.pid" in n for n in notes)
        assert cluster.status().running
        with pytest.raises(ConfigError, match="already exists"):
            cluster.create()
    finally:
        cluster.destroy()
    assert not cluster.directory.exists()


def test_cli_db_lifecycle(
    cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = Path(cli_env["PGDR_HOME"]) / "cli-home"
    env = cli_env | {"PGDR_HOME": str(home)}
    result = run_cli("db", "status", "--json", env=env)
    assert result.code == 1
    assert json.loads(result.stdout)["exists"] is False
    result = run_cli("health", env=env)
    assert result.code == 1  # no database: unhealthy, with the reason
    assert "pgdr db start" in result.stdout
    result = run_cli("db", "start", "--json", env=env)
    assert result.code == 0, result.stderr
    started = json.loads(result.stdout)
    assert started["running"] and started["created"]
    url = run_cli("db", "url", env=env).stdout.strip()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert run_cli("health", "--json", env=env).code == 0
    again = run_cli("db", "start", env=env)  # said "Started", as if it had not been running
    assert again.code == 0 and "Already running" in again.stdout, again.stdout
    listed = run_cli("cluster", "list", env=env)  # showed "[green]running[/]"
    assert "running" in listed.stdout and "[green]" not in listed.stdout, listed.stdout
    # Destroy asks first; without an answer nothing is deleted.
    result = run_cli("db", "destroy", env=env, input="n\n")
    assert result.code == 2
    assert (home / "clusters" / "default" / "data").exists()
    assert run_cli("db", "stop", env=env).code == 0
    assert run_cli("db", "status", env=env).code == 1
    assert run_cli("db", "destroy", "--yes", env=env).code == 0
    assert not (home / "clusters" / "default").exists()


def test_a_deep_home_gets_a_short_socket_directory(cli_env: dict[str, str], tmp_path: Path) -> None:
    """A socket under a deep PGDR_HOME would exceed 107 bytes: the server did not start
    ("could not create any Unix-domain sockets"). Its socket now lives in a short private
    directory in /tmp, made again after a reboot empties /tmp, removed with the cluster, and
    refused when someone else put something there."""
    home = Path(cli_env["PGDR_HOME"]) / ("deep-" * 18)
    env = cli_env | {"PGDR_HOME": str(home)}
    assert run_cli("db", "start", env=env).code == 0
    status = json.loads(run_cli("db", "status", "--json", env=env).stdout)
    short = Path(status["socket_dir"])
    assert short.parent == Path("/tmp") and short.name.startswith("pgdr-"), short
    info = short.lstat()
    assert info.st_mode & 0o777 == 0o700
    assert info.st_uid == resolve_service_user(PgdrSettings().service_user).uid
    url = LocalCluster(home / "clusters" / "default", PgdrSettings(home=home)).conninfo()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert run_cli("db", "stop", env=env).code == 0
    subprocess.run(["rm", "-rf", str(short)], check=True)  # a reboot emptied /tmp
    # anyone could make that directory now and serve there: no URL through it is shown
    shown = run_cli("db", "url", env=env)
    assert shown.code == 2 and str(short) in assert_one_sentence(shown.stderr)
    assert run_cli("db", "start", env=env).code == 0
    assert run_cli("db", "url", env=env).stdout.strip() == url
    # the same home spelled another way finds the same directory
    (Path(cli_env["PGDR_HOME"]) / "x").mkdir()
    other = Path(cli_env["PGDR_HOME"]) / "x" / ".." / home.name
    assert run_cli("db", "url", env=env | {"PGDR_HOME": str(other)}).stdout.strip() == url
    assert short.is_dir()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert run_cli("db", "destroy", "--yes", env=env).code == 0
    assert not short.exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    short.symlink_to(elsewhere)
    try:
        result = run_cli("db", "start", "--new", env=env)
        assert result.code == 2
        assert str(short) in assert_one_sentence(result.stderr)
        assert list(elsewhere.iterdir()) == [] and elsewhere.stat().st_mode & 0o777 != 0o700
    finally:
        short.unlink()


def test_unusable_home_is_a_clear_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = cli_env | {"PGDR_HOME": str(blocker / "home")}
    result = run_cli("db", "start", env=env)
    assert result.code == 2
    assert "PGDR_HOME" in result.stderr and "not usable" in result.stderr
    assert blocker.read_text() == "x"


def test_missing_pg_bin_is_a_clear_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = cli_env | {"PGDR_HOME": str(tmp_path / "h"), "PGDR_PG_BIN": str(tmp_path / "nothing")}
    result = run_cli("db", "start", env=env)
    assert result.code == 2
    assert "PGDR_PG_BIN" in result.stderr


def test_start_timeout_is_reasonable(pg18: Server) -> None:
    started = time.monotonic()
    assert pg18.cluster.start() == []  # already running: a no-op
    assert time.monotonic() - started < 5


def test_binaries_the_service_user_cannot_reach_are_staged(settings: PgdrSettings) -> None:
    """A venv under root's 0700 home: the server half is copied to PGDR_HOME/runtime."""
    import shutil

    from pgdr.cluster.installation import PgInstallation, embedded_bin_dir
    from pgdr.cluster.runtime import reachable_installation

    source = embedded_bin_dir()
    assert source is not None
    package = source.parent.parent
    private = Path(tempfile.mkdtemp(prefix="private-", dir="/tmp"))
    private.chmod(0o700)
    try:
        shutil.copytree(package, private / "site" / package.name, symlinks=True)
        libs = package.with_name(package.name + ".libs")
        shutil.copytree(libs, private / "site" / libs.name, symlinks=True)
        hidden = PgInstallation(
            private / "site" / package.name / "pginstall" / "bin", 18, "18.6", "embedded"
        )
        user = resolve_service_user(settings.service_user)
        assert not user.can_reach(hidden.bin_dir / "postgres")
        home = Path(tempfile.mkdtemp(prefix="stage-", dir="/tmp"))
        home.chmod(0o711)
        staged = reachable_installation(hidden, user, home / "runtime")
        assert staged.bin_dir != hidden.bin_dir and user.can_reach(staged.bin_dir / "postgres")
        assert reachable_installation(hidden, user, home / "runtime") == staged  # copied once
        cluster = LocalCluster(home / "clusters" / "staged", PgdrSettings(home=home))
        cluster.create(staged)
        cluster.start()
        with psycopg.connect(cluster.conninfo()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        cluster.destroy()
        shutil.rmtree(home)
    finally:
        shutil.rmtree(private)


def test_missing_service_user_is_created(tmp_path: Path) -> None:
    import pwd
    import subprocess

    name = "pgdr-test-svc"
    subprocess.run(["userdel", name], capture_output=True)
    home = Path(tempfile.mkdtemp(prefix="svc-", dir="/tmp"))
    home.chmod(0o711)
    settings = PgdrSettings(home=home, service_user=name)
    cluster = LocalCluster(home / "clusters" / "svc", settings)
    try:
        cluster.create(choose_installation(None, 18))
        cluster.start()
        pid = cluster.status().pid
        assert pid is not None
        assert os.stat(f"/proc/{pid}").st_uid == pwd.getpwnam(name).pw_uid
    finally:
        cluster.destroy()
        subprocess.run(["userdel", name], capture_output=True)
    with pytest.raises(ConfigError, match="must not be root"):
        resolve_service_user("root")


def run_on_terminal(*args: str, env: dict[str, str], typed: bytes) -> tuple[int, str]:
    """Run `pgdr ARGS` with a terminal on stdin, type ``typed`` at it (b"\\x04" is Ctrl-D: end
    of input); returns the exit code and stderr."""
    main, tty = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgdr", *args],
            env=env,
            stdin=tty,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        os.write(main, typed)
        _out, err = proc.communicate(timeout=60)
    finally:
        os.close(main)
        os.close(tty)
    return proc.returncode, err.decode()


def test_unconfirmed_deletions_exit_2_without_a_terminal_or_an_answer(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """`cluster rm` and `db destroy` delete only when confirmed: with stdin not a terminal
    (even one that says y: only --yes skips the question), or at its end (Ctrl-D), nothing is
    deleted and the one sentence says so, exit 2 (never click's "Aborted.", exit 1)."""
    home = tmp_path / "home"
    env = cli_env | {"PGDR_HOME": str(home)}
    copy = home / "clusters" / "copy1"
    copy.mkdir(parents=True)
    (copy / "cluster.json").write_text("{}")
    default = home / "clusters" / "default"
    default.mkdir()
    for command in (("cluster", "rm", "copy1"), ("db", "destroy")):
        for answer in (None, "y\n"):
            result = run_cli(*command, env=env, input=answer)
            assert result.code == 2, (command, answer, result)
            assert "Not confirmed: nothing was deleted" in assert_one_sentence(result.stderr)
        code, err = run_on_terminal(*command, env=env, typed=b"\x04")
        assert code == 2, (command, err)
        assert "Not confirmed: nothing was deleted" in assert_one_sentence(err)
        assert "Aborted" not in err
    assert copy.is_dir() and default.is_dir()
    code, err = run_on_terminal("db", "destroy", env=env, typed=b"y\n")  # a yes on a terminal
    assert code == 0, err
    assert not default.exists()


def test_root_writes_nothing_through_what_the_service_user_left(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A hostile review: the service user made the short socket directory ahead of time with
    `initdb.pw` a link to a file of root's; `db start` (as root) wrote the superuser's password
    through it and gave that file to the service user."""
    home = Path(cli_env["PGDR_HOME"]) / ("deep-" * 18)
    env = cli_env | {"PGDR_HOME": str(home)}
    user = resolve_service_user(PgdrSettings().service_user)
    short = LocalCluster(home / "clusters" / "default", PgdrSettings(home=home)).socket_dir
    victim = tmp_path / "victim"
    victim.write_text("root's\n")
    victim.chmod(0o644)
    short.mkdir(mode=0o700)
    (short / "initdb.pw").symlink_to(victim)
    os.lchown(short / "initdb.pw", user.uid, user.gid)
    os.chown(short, user.uid, user.gid)
    try:
        started = run_cli("db", "start", "--new", env=env)
        assert started.code == 0, started.stderr
        assert victim.read_text() == "root's\n"
        info = victim.stat()
        assert (info.st_uid, info.st_mode & 0o777) == (0, 0o644)
    finally:
        run_cli("db", "destroy", "--yes", env=env)
        subprocess.run(["rm", "-rf", str(short)], check=True)


def test_cluster_rm_follows_no_link(settings: PgdrSettings, tmp_path: Path) -> None:
    """A hostile review: `cluster rm --with-data` deleted another cluster's data when the path
    of its external data directory had been made to lead there through a symbolic link; a
    cluster directory made a link gave a traceback after the server was stopped."""
    inst = choose_installation(None, 18)
    kept = LocalCluster(settings.home / "clusters" / "kept", settings)
    kept.create(inst)
    outside = tmp_path / "userdir"
    (outside / "restore").mkdir(parents=True)
    subprocess.run(["cp", "-a", str(kept.data_dir), str(outside / "restore" / "data")], check=True)
    other = LocalCluster(
        settings.home / "clusters" / "other", settings, data_dir=outside / "restore" / "data"
    )
    other.adopt(inst)
    (outside / "restore").rename(outside / "restore.old")
    (outside / "restore").symlink_to(kept.directory)
    with pytest.raises(ConfigError, match="symbolic link"):
        remove_cluster(settings, "other", with_data=True)
    assert (kept.data_dir / "PG_VERSION").is_file() and other.directory.is_dir()
    (settings.home / "clusters" / "alias").symlink_to(kept.directory)
    kept.start()
    try:
        with pytest.raises(ConfigError, match="symbolic link"):
            remove_cluster(settings, "alias", with_data=False)
        assert kept.status().running
    finally:
        (settings.home / "clusters" / "alias").unlink()
        kept.destroy()


def test_service_user_writes_never_follow_what_is_there(tmp_path: Path) -> None:
    """Root writes into the service user's directories through ServiceUser.write: not through
    a symbolic link, a hard link to another file, or into a FIFO; and own() follows no link."""
    user = resolve_service_user(PgdrSettings().service_user)
    victim = tmp_path / "victim"
    victim.write_text("root's\n")
    (tmp_path / "link").symlink_to(victim)
    os.link(victim, tmp_path / "hard")
    os.mkfifo(tmp_path / "fifo")
    for name in ("link", "hard", "fifo"):
        with pytest.raises(RuntimeFailure, match="Cannot write"):
            user.write(tmp_path / name, "password\n")
    with pytest.raises(RuntimeFailure, match="not a regular file"):
        user.own(tmp_path / "link", 0o600)
    assert victim.read_text() == "root's\n" and victim.stat().st_uid == os.getuid()
    user.write(tmp_path / "fresh", "x\n", new=True)
    assert (tmp_path / "fresh").stat().st_uid == user.uid
    with pytest.raises(RuntimeFailure, match="Cannot write"):
        user.write(tmp_path / "fresh", "y\n", new=True)
