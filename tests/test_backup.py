"""Base backups and restores against real servers (PostgreSQL 15 and 18), local repositories."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from conftest import Server, run_cli
from fixtures.backup import add_rows, count_rows
from pgdr.backup import Repository
from pgdr.backup.digest import digest_of_file
from pgdr.backup.take import take_backup
from pgdr.cluster import LocalCluster
from pgdr.config import PgdrSettings
from pgdr.core.errors import ConfigError
from pgdr.restore import restore_backup
from pgdr.restore.start import adopt_restored


def _tree(root: Path) -> dict[str, tuple[int, str]]:
    return {
        p.relative_to(root).as_posix(): (
            p.stat().st_size,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def test_backup_and_restore_api(
    server: Server, repo: Repository, scratch: Path, settings: PgdrSettings
) -> None:
    db = server.new_database()
    add_rows(db, "before_backup", 5000)
    manifest = take_backup(repo, server.cluster.conninfo(), label="api")
    assert manifest.pg_major == server.major
    assert manifest.kind == "full" and manifest.label == "api"
    assert any(f.path == "PG_VERSION" for f in manifest.files)
    assert all(f.digest for f in manifest.files if f.kind == "file")
    assert [m.id for m in repo.list_backups()] == [manifest.id]

    target = scratch / "restored"
    result = restore_backup(repo, manifest.id, target)
    assert result.data_dir == target.resolve()
    assert (target / "PG_VERSION").read_text().strip() == str(server.major)
    assert target.stat().st_mode & 0o777 == 0o700

    # The parallel writer and the streaming extractor (which also checks every file's digest)
    # lay down the same bytes, matching the manifest.
    checked = scratch / "checked"
    restore_backup(repo, manifest.id, checked, check_files=True)
    assert _tree(target) == _tree(checked)
    files = [f for f in manifest.files if f.kind == "file"]
    assert set(_tree(target)) == {f.path for f in files}
    for f in files:
        assert digest_of_file(target / f.path, manifest.file_digest(f)) == f.digest, f.path

    cluster = adopt_restored(settings, target, manifest.pg_major, scratch / "cluster")
    cluster.start()
    try:
        dbname = psycopg.conninfo.conninfo_to_dict(db)["dbname"]
        assert count_rows(cluster.conninfo(str(dbname)), "before_backup") == 5000
    finally:
        cluster.stop()


def test_cli_backup_list_show_restore_start(
    server: Server, backup_env: dict[str, str], scratch: Path
) -> None:
    db = server.new_database()
    add_rows(db, "cli_rows", 1234)
    env = backup_env | {"DATABASE_URL": db}
    taken = run_cli("backup", "--label", "before-change", "--json", env=env)
    assert taken.code == 0, taken.stderr
    backup = json.loads(taken.stdout)
    assert backup["label"] == "before-change" and backup["pg_major"] == server.major

    listed = run_cli("backup", "list", "--json", env=env)
    assert [b["id"] for b in json.loads(listed.stdout)["backups"]] == [backup["id"]]
    human = run_cli("backup", "list", env=env)
    assert backup["id"][:8] in human.stdout
    shown = json.loads(run_cli("backup", "show", "latest", "--json", env=env).stdout)
    for field in (
        "system_identifier",
        "timeline",
        "start_lsn",
        "stop_lsn",
        "start_time",
        "stop_time",
        "compression",
        "key_id",
        "pg_version",
    ):
        assert shown[field], field

    target = scratch / "data"
    restored = run_cli("restore", backup["id"], "--to", str(target), "--start", "--json", env=env)
    assert restored.code == 0, restored.stderr
    out = json.loads(restored.stdout)
    cluster = LocalCluster(
        Path(out["cluster_dir"]), PgdrSettings(home=Path(env["PGDR_HOME"])), data_dir=target
    )
    try:
        dbname = psycopg.conninfo.conninfo_to_dict(db)["dbname"]
        url = out["url"].replace("/postgres?", f"/{dbname}?")
        assert count_rows(url, "cli_rows") == 1234
    finally:
        cluster.destroy()

    again = run_cli("restore", backup["id"], "--to", str(target), env=env)
    assert again.code == 2
    assert "already exists" in again.stderr

    # A restore of a base backup never connects, so it starts without psycopg (a third of a
    # cold start): the process reports, as it exits, whether psycopg was ever loaded.
    flag = scratch / "psycopg-loaded"
    wrapper = (
        "import atexit, runpy, sys; from pathlib import Path; "
        f"atexit.register(lambda: Path({str(flag)!r}).write_text(str('psycopg' in sys.modules))); "
        "sys.argv = ['pgdr', *sys.argv[1:]]; runpy.run_module('pgdr', run_name='__main__')"
    )
    args = ["restore", backup["id"], "--to", str(scratch / "plain")]
    plain = subprocess.run([sys.executable, "-c", wrapper, *args], env=env, capture_output=True)
    assert plain.returncode == 0, plain.stderr
    assert flag.read_text() == "False"


def test_compress_level_and_digest_scheme(
    server: Server, backup_env: dict[str, str], scratch: Path
) -> None:
    """``--compress-level`` sets the chunks' zstd level (1 by default); out of range is refused
    before anything is taken; new backups name their digest scheme."""
    env = backup_env | {"DATABASE_URL": server.new_database()}
    refused = run_cli("backup", "--compress-level", "0", env=env)
    assert refused.code == 2, refused.stdout + refused.stderr
    assert "--compress-level" in refused.stderr
    assert json.loads(run_cli("backup", "list", "--json", env=env).stdout)["backups"] == []
    nowhere = scratch / "no-such-repo"  # a typo in PGDR_REPO, a backup disk not mounted
    listed = run_cli("backup", "list", env=env | {"PGDR_REPO": str(nowhere)})
    assert listed.code == 0 and "There is no repository at" in listed.stdout, listed.stdout
    assert not nowhere.exists()
    for args, level in (([], 1), (["--compress-level", "3"], 3)):
        taken = run_cli("backup", *args, "--json", env=env)
        assert taken.code == 0, taken.stderr
        shown = json.loads(run_cli("backup", "show", "latest", "--json", env=env).stdout)
        assert shown["compression"] == f"zstd-{level}"
        assert shown["digest_scheme"] == "xxh3-128-pieces"


def test_restore_refuses_existing_directory_without_force(
    pg18: Server, repo: Repository, scratch: Path
) -> None:
    manifest = take_backup(repo, pg18.cluster.conninfo())
    target = scratch / "busy"
    target.mkdir()
    (target / "precious").write_text("keep me")
    with pytest.raises(Exception, match="already exists and is not empty"):
        restore_backup(repo, manifest.id, target)
    assert (target / "precious").read_text() == "keep me"
    # --force replaces a data directory, never a directory of something else (--to ~ by mistake)
    with pytest.raises(ConfigError, match="holds no PostgreSQL data directory"):
        restore_backup(repo, manifest.id, target, force=True)
    assert (target / "precious").read_text() == "keep me"
    (target / "PG_VERSION").write_text("18\n")
    restore_backup(repo, manifest.id, target, force=True)
    assert not (target / "precious").exists()
    assert (target / "PG_VERSION").is_file()


def test_other_system_identifier_is_refused(
    pg18: Server, pg15: Server, backup_env: dict[str, str]
) -> None:
    first = run_cli("backup", env=backup_env | {"DATABASE_URL": pg18.cluster.conninfo()})
    assert first.code == 0, first.stderr
    other = run_cli("backup", env=backup_env | {"DATABASE_URL": pg15.cluster.conninfo()})
    assert other.code == 2
    assert "holds backups of database system" in other.stderr
    assert len(other.stderr.strip().splitlines()) <= 2
    listed = json.loads(run_cli("backup", "list", "--json", env=backup_env).stdout)
    assert len(listed["backups"]) == 1
