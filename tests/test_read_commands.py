"""A read command never creates or changes anything.

Not in ``$PGDR_HOME`` (which it never creates either), not in the repository, not in the
database, not in the current directory. Two situations: a fresh machine (``PGDR_HOME`` absent, no
repository, the database reachable or not) and a populated one (a repository holding a backup,
WAL and a dump; records: a snapshot, an inventory, a check, incidents, a restore point). Every
file under ``PGDR_HOME``, the repository and the working directory is fingerprinted (kind, size,
mtime, mode, contents of small files; a directory's mtime shows a file created and removed), and
so is the database (relations, row counts, functions, triggers, slots, settings, databases, roles).

Commands that write by design are not here: ``check`` (records every run), ``check --deep``
(installs amcheck), ``check snapshot``, ``inventory --save/--output``, ``backup verify
--restore-test`` and ``dump verify --restore-test`` (record their result in the repository),
``drill report --html`` (writes the page), ``wal setup --apply``, ``wal fetch`` (writes its
destination), ``monitor run``, ``incident ack/resolve/review``, ``mark``, ``serve``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer

import pgdr
from conftest import CliResult, run_cli
from pgdr.cli.app import build_app
from pgdr.cluster import LocalCluster, choose_installation
from pgdr.config import PgdrSettings
from pgdr.sample import VectorType, load_sample

SMALL = 1 << 20  # files up to this size are hashed
UNREACHABLE = "postgresql://pgdr@127.0.0.1:1/nowhere?connect_timeout=2"

# (id, arguments, accepts --json). "{incident}" is replaced by an incident id of the setup,
# "{deleted}" by the key of a chatbot deleted (with its children) after the backup.
READS: list[tuple[str, tuple[str, ...], bool]] = [
    ("version", ("version",), False),
    ("health", ("health",), True),
    ("health-pool", ("health", "--pool"), True),
    ("status", ("status",), True),
    ("status-nagios", ("status", "--nagios"), False),
    ("db-status", ("db", "status"), True),
    ("db-url", ("db", "url"), False),
    ("cluster-list", ("cluster", "list"), True),
    ("cluster-url", ("cluster", "url", "nosuch"), False),
    ("pool-show", ("pool", "show"), True),
    ("pool-advise", ("pool", "advise"), True),
    ("profile-show", ("profile", "show"), True),
    ("backup-list", ("backup", "list"), True),
    ("backup-show", ("backup", "show", "latest", "--files"), True),
    ("backup-verify", ("backup", "verify"), True),
    ("backup-verify-all", ("backup", "verify", "--all"), True),
    ("dump-list", ("dump", "list"), True),
    ("dump-verify", ("dump", "verify", "latest"), True),
    ("dump-prune-dry", ("dump", "prune", "--dry-run"), True),
    ("prune-dry", ("prune", "--dry-run"), True),
    ("wal-status", ("wal", "status"), True),
    ("wal-setup", ("wal", "setup"), True),
    ("wal-setup-patroni", ("wal", "setup", "--patroni"), False),
    ("wal-find", ("wal", "find", "--table", "chatbots"), True),
    ("repo-info", ("repo", "info"), True),
    ("repo-list", ("repo", "list"), True),
    ("key-show", ("key", "show"), True),
    ("audit-show", ("audit", "show"), True),
    ("readonly-status", ("readonly", "status"), True),
    ("incident-list", ("incident", "list", "--all"), True),
    ("incident-show", ("incident", "show", "{incident}"), True),
    ("monitor-report", ("monitor", "report"), True),
    ("monitor-incidents", ("monitor", "incidents", "--all"), True),
    ("monitor-severities", ("monitor", "severities"), True),
    ("drill-report", ("drill", "report"), True),
    ("reembed-status", ("reembed", "status"), True),
    ("inventory", ("inventory",), True),
    ("inventory-compare", ("inventory", "compare"), True),
    ("check-compare", ("check", "compare"), True),
    ("check-compare-env", ("check", "compare", "--against-env", "PGDR_TEST_OTHER"), True),
    ("agent-install-dry", ("agent", "install", "--systemd", "--dry-run"), False),
    # a comparison with a backup restores it into a throwaway cluster under $PGDR_HOME/scratch
    # (docs/integrity.md) and removes it: it may use PGDR_HOME, never leave anything there
    ("check-compare-backup", ("check", "compare", "--backup", "latest"), False),
    # a dry run (docs/surgical-recovery.md): a throwaway point-in-time copy, nothing put back
    ("undelete-dry", ("undelete", "--table", "chatbots", "--key", "{deleted}", "--dry-run"), False),
]


def _forms(with_json: bool = True) -> list[Any]:
    forms = []
    for name, args, has_json in READS:
        forms.append(pytest.param(args, id=name))
        if has_json and with_json:
            forms.append(pytest.param((*args, "--json"), id=f"{name}-json"))
    return forms


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root`` (itself included): kind, size, mtime_ns, mode, sha256."""
    if not root.exists():
        return {}
    out: dict[str, tuple[Any, ...]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        digest = ""
        if stat.S_ISREG(st.st_mode) and st.st_size <= SMALL:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        out[path.relative_to(root).as_posix()] = (
            stat.S_IFMT(st.st_mode),
            st.st_size if not stat.S_ISDIR(st.st_mode) else 0,
            st.st_mtime_ns,
            stat.S_IMODE(st.st_mode),
            digest,
        )
    return out


def difference(before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]]) -> str:
    created = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    parts = [
        f"{what}: {paths}"
        for what, paths in (("created", created), ("removed", removed), ("changed", changed))
        if paths
    ]
    return "; ".join(parts)


DB_FINGERPRINT = [
    "SELECT datname, datallowconn FROM pg_database ORDER BY 1",
    "SELECT rolname FROM pg_roles ORDER BY 1",
    "SELECT slot_name, slot_type, database FROM pg_replication_slots ORDER BY 1",
    "SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE '%auto.conf' ORDER BY 1",
    "SELECT setdatabase, setrole, setconfig::text FROM pg_db_role_setting ORDER BY 1, 2",
    "SELECT extname, extversion FROM pg_extension ORDER BY 1",
    "SELECT nspname FROM pg_namespace ORDER BY 1",
    "SELECT n.nspname, c.relname, c.relkind, c.reloptions::text FROM pg_class c"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'"
    " ORDER BY 1, 2",
    "SELECT p.oid::regprocedure::text, md5(p.prosrc) FROM pg_proc p"
    " JOIN pg_namespace n ON n.oid = p.pronamespace"
    " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
    "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger"
    " WHERE NOT tgisinternal ORDER BY 1, 2",
    "SELECT evtname FROM pg_event_trigger ORDER BY 1",
    "SELECT pubname FROM pg_publication ORDER BY 1",
    "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2",
    # manual VACUUM and ANALYZE only: autovacuum keeps counters of its own
    "SELECT relid::regclass::text, vacuum_count, analyze_count FROM pg_stat_user_tables ORDER BY 1",
    "SELECT gid FROM pg_prepared_xacts ORDER BY 1",
    "SELECT count(*) FROM pg_description",
]


def database_fingerprint(url: str) -> dict[str, Any]:
    """What a read must leave as it is: catalog objects pgdr could create, every table's rows."""
    out: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for query in DB_FINGERPRINT:
            out[query] = conn.execute(query).fetchall()
        tables = conn.execute(
            "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables ORDER BY 1"
        ).fetchall()
        for (table,) in tables:
            row = conn.execute(
                f"SELECT count(*), md5(string_agg(t::text, '' ORDER BY t::text)) FROM {table} t"
            ).fetchone()
            out[table] = row
    return out


@dataclass
class Setup:
    """One machine: its PGDR_HOME, repository, working directory, environment and database."""

    home: Path
    repo: Path
    cwd: Path
    env: dict[str, str]
    url: str | None  # the database to fingerprint (None: the commands cannot reach one)
    incident: str = "nosuch"
    deleted: str = "00000000-0000-0000-0000-000000000000"

    def snapshot(self) -> dict[str, Any]:
        return {
            "home": tree(self.home),
            "repo": tree(self.repo),
            "cwd": tree(self.cwd),
            # temporary files may come and go (TMPDIR is this one); none may stay
            "tmp": {p: () for p in tree(self.cwd.parent / "tmp") if p != "."},
            "database": database_fingerprint(self.url) if self.url else None,
        }

    def run(self, *args: str) -> CliResult:
        args = tuple(
            a.replace("{incident}", self.incident).replace("{deleted}", self.deleted) for a in args
        )
        return run_cli(*args, env=self.env, cwd=self.cwd)


def assert_read_only(setup: Setup, args: tuple[str, ...]) -> CliResult:
    before = setup.snapshot()
    result = setup.run(*args)
    after = setup.snapshot()
    said = f"pgdr {' '.join(args)} -> {result.code}\n{result.stdout[-1500:]}{result.stderr[-1500:]}"
    assert "Traceback" not in result.stderr, said
    assert result.code in (0, 1, 2, 3), said
    if "--backup" in args or args[0] == "undelete":  # a throwaway came and went: PGDR_HOME's
        # own mtime moved (docs/integrity.md, docs/surgical-recovery.md)
        for snap in (before, after):
            if "." in snap["home"]:
                snap["home"]["."] = snap["home"]["."][:2] + snap["home"]["."][3:]
    for part in ("home", "repo", "cwd", "tmp"):
        diff = difference(before[part], after[part])
        assert not diff, f"{said}\nunder {part}: {diff}"
    assert before["database"] == after["database"], f"{said}\nthe database changed"
    return result


def _tmp(root: Path) -> Path:
    tmp = root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o1777)
    return tmp


def base_env(home: Path, url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(("PG", "DB_")) or k == "DATABASE_URL")
    }
    return env | {
        "PGDR_HOME": str(home),
        "TMPDIR": str(_tmp(home.parent)),
        "DATABASE_URL": url,
        "PGDR_TEST_OTHER": url,
        "COLUMNS": "200",
    }


@pytest.fixture(scope="module")
def machine(settings: PgdrSettings) -> Iterator[tuple[Path, LocalCluster]]:
    """A directory the service user can traverse, and a cluster of our own holding the sample."""
    base = Path(tempfile.mkdtemp(prefix="pgdr-ro-", dir="/tmp"))
    base.chmod(0o711)
    cluster = LocalCluster(settings.home / "clusters" / f"ro-{os.getpid()}", settings)
    cluster.create(choose_installation(None, 18))
    cluster.start()
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute('CREATE DATABASE "app"')
    load_sample(cluster.conninfo("app"), scale=0.01, vector_type=VectorType.VECTOR)
    yield base, cluster
    cluster.destroy()
    shutil.rmtree(base, ignore_errors=True)


def _cli_ok(setup: Setup, *args: str) -> Any:
    result = run_cli(*args, "--json", env=setup.env, cwd=setup.cwd, timeout=600)
    assert result.code == 0, f"pgdr {' '.join(args)}: {result.stdout}{result.stderr}"
    return json.loads(result.stdout)


def _stream_wal(setup: Setup, cluster: LocalCluster) -> None:
    """Stream WAL into the repository until it holds WAL newer than a fresh commit."""
    log = (setup.home.parent / "stream.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgdr", "wal", "stream"],
        env=setup.env,
        cwd=setup.cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        since = time.time()
        with psycopg.connect(setup.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS ticks (at timestamptz DEFAULT now())")
            conn.execute("INSERT INTO ticks DEFAULT VALUES")
            conn.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            out = run_cli("wal", "status", "--json", env=setup.env, cwd=setup.cwd)
            if out.code == 0 and (json.loads(out.stdout)["newest_wal_at"] or 0) > since:
                return
            time.sleep(0.5)
        raise AssertionError("the WAL did not reach the repository")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def populated(machine: tuple[Path, LocalCluster]) -> Setup:
    """A repository with a backup, WAL and a dump; records of every kind; audit installed."""
    base, cluster = machine
    home, repo, cwd = base / "home", base / "repo", base / "cwd"
    for d in (home, cwd):
        d.mkdir(mode=0o711)
    url = cluster.conninfo("app")
    setup = Setup(home, repo, cwd, base_env(home, url) | {"PGDR_REPO": str(repo)}, url)
    _cli_ok(setup, "backup")
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT chatbot_id::text FROM conversations LIMIT 1").fetchone()
        assert row is not None
        setup.deleted = str(row[0])
        conn.execute("DELETE FROM chatbots WHERE id = %s::uuid", (setup.deleted,))
    _stream_wal(setup, cluster)
    _cli_ok(setup, "dump")
    _cli_ok(setup, "audit", "install")
    _cli_ok(setup, "check", "snapshot")
    _cli_ok(setup, "inventory", "--save")
    _cli_ok(setup, "mark", "before-reads")
    run_cli("check", "--json", env=setup.env, cwd=cwd)
    run_cli("monitor", "run", "--once", "--json", env=setup.env, cwd=cwd, timeout=300)
    incidents = json.loads(
        run_cli("incident", "list", "--all", "--json", env=setup.env, cwd=cwd).stdout
    )
    listed = incidents.get("incidents", incidents) if isinstance(incidents, dict) else incidents
    if listed:
        setup.incident = str(listed[0]["id"])
    return setup


def _fresh(machine: tuple[Path, LocalCluster], kind: str, url: str) -> Setup:
    """PGDR_HOME does not exist."""
    base, cluster = machine
    root = base / f"fresh-{kind}"
    cwd = root / "cwd"
    cwd.mkdir(parents=True)
    home = root / "home"
    return Setup(home, home / "repository", cwd, base_env(home, url), cluster.conninfo("app"))


@pytest.fixture(scope="module")
def stranger(machine: tuple[Path, LocalCluster], populated: Setup) -> Setup:
    """A new machine (no PGDR_HOME) reading the populated repository with its key: the DR case."""
    _, cluster = machine
    setup = _fresh(machine, "stranger", cluster.conninfo("app"))
    key = (populated.home / "keys" / "master.key").read_text().strip()
    setup.repo = populated.repo
    setup.env |= {"PGDR_REPO": str(populated.repo), "PGDR_ENCRYPTION_KEY": key}
    setup.incident, setup.deleted = populated.incident, populated.deleted
    return setup


@pytest.fixture(scope="module")
def nothing(machine: tuple[Path, LocalCluster]) -> Setup:
    """No PGDR_HOME, no repository, the database unreachable."""
    setup = _fresh(machine, "nothing", UNREACHABLE)
    setup.url = None
    setup.env["DB_CONNECTION_TIMEOUT"] = "1000"  # health --pool waits this long for nothing
    return setup


def test_the_cli_runs_this_code(machine: tuple[Path, LocalCluster]) -> None:
    base, _ = machine
    code = "import pgdr; print(pgdr.__file__)"
    env = base_env(base / "absent", "")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == pgdr.__file__


@pytest.mark.parametrize("args", _forms(with_json=False))
def test_a_read_with_nothing_set_up_creates_nothing(nothing: Setup, args: tuple[str, ...]) -> None:
    assert_read_only(nothing, args)
    assert not nothing.home.exists()


@pytest.mark.parametrize("args", _forms(with_json=False))
def test_a_read_on_a_new_machine_creates_nothing(stranger: Setup, args: tuple[str, ...]) -> None:
    assert_read_only(stranger, args)
    assert not stranger.home.exists()


@pytest.mark.parametrize("args", _forms())
def test_a_read_changes_nothing(populated: Setup, args: tuple[str, ...]) -> None:
    assert_read_only(populated, args)


def test_help_creates_nothing(machine: tuple[Path, LocalCluster]) -> None:
    """The help of the root, of every command and of one sub-command of each group (which loads
    the group and runs its callback), each in a process of its own."""
    fresh = _fresh(machine, "help", UNREACHABLE)
    fresh.url = None
    root = typer.main.get_command(build_app())
    chosen: list[tuple[str, ...]] = [("--help",)]
    for name, command in getattr(root, "commands", {}).items():
        subs = list(getattr(command, "commands", {}))  # a group: its first sub-command's help
        chosen.append((name, subs[0], "--help") if subs else (name, "--help"))
    assert len(chosen) > 30
    before = fresh.snapshot()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda args: (args, fresh.run(*args)), chosen))
    for args, result in results:
        assert result.code == 0, f"pgdr {' '.join(args)}: {result.stderr}"
    assert fresh.snapshot() == before
    assert not fresh.home.exists()


def test_a_comparison_with_a_backup_needs_pgdr_home(stranger: Setup) -> None:
    """It restores into $PGDR_HOME/scratch: without PGDR_HOME it says so, creating nothing."""
    result = assert_read_only(stranger, ("check", "compare", "--backup", "latest"))
    assert result.code == 2, result.stdout + result.stderr
    assert "does not exist" in result.stderr and str(stranger.home) in result.stderr
    assert not stranger.home.exists()
