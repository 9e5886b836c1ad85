"""Master keys: the generated default, rotation without rewriting data, incremental backups."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from conftest import Server, run_cli
from fixtures.backup import add_rows, count_rows
from fixtures.wal import WalEnv
from pgdr.backup import Repository
from pgdr.backup.take import take_backup
from pgdr.config import PgdrSettings
from pgdr.crypto.keys import generate_key_text, write_key_file
from pgdr.restore import restore_backup
from pgdr.restore.staging import _claimed_by_someone
from pgdr.restore.start import adopt_restored
from test_pitr import backup, committed_by, ids, restore, stop_restored, wait_streamed


def test_generated_key_and_rotation(pg18: Server, cli_env: dict[str, str], scratch: Path) -> None:
    home = scratch / "home"
    home.mkdir()
    home.chmod(0o711)
    env = cli_env | {
        "PGDR_HOME": str(home),
        "DATABASE_URL": pg18.cluster.conninfo(),
    }
    first = run_cli("backup", env=env)
    assert first.code == 0, first.stderr
    key_file = home / "keys" / "master.key"
    assert "Generated a new master key" in first.stderr and str(key_file) in first.stderr
    assert key_file.stat().st_mode & 0o777 == 0o600
    second = run_cli("backup", "--json", env=env)
    assert "Generated" not in second.stderr
    old_id = json.loads(second.stdout)["key_id"]

    chunks_before = {
        p: p.stat().st_mtime_ns for p in (home / "repository" / "backups").rglob("chunks/*")
    }
    rotated = run_cli("key", "rotate", "--json", env=env)
    assert rotated.code == 0, rotated.stderr
    report = json.loads(rotated.stdout)
    assert report["old_key_id"] == old_id and report["rewrapped"] == {"primary": 2}
    assert Path(report["retired_key_file"]).is_file()
    chunks_after = {
        p: p.stat().st_mtime_ns for p in (home / "repository" / "backups").rglob("chunks/*")
    }
    assert chunks_after == chunks_before  # no data rewritten

    listed = json.loads(run_cli("backup", "list", "--json", env=env).stdout)["backups"]
    assert {b["key_id"] for b in listed} == {report["new_key_id"]}
    verify = run_cli("backup", "verify", "--all", env=env)
    assert verify.code == 0, verify.stderr
    shown = json.loads(run_cli("key", "show", "--json", env=env).stdout)
    assert shown["key_id"] == report["new_key_id"]

    old_key = Path(report["retired_key_file"]).read_text().strip()
    with_old = env | {"PGDR_ENCRYPTION_KEY": old_key}
    refused = run_cli("restore", "latest", "--to", str(scratch / "r"), env=with_old)
    assert refused.code == 2 and "is not the key that protects" in refused.stderr

    env_key = env | {"PGDR_ENCRYPTION_KEY": generate_key_text()}
    no_file = run_cli("key", "rotate", env=env_key)
    assert no_file.code == 2 and "--new-key-file" in no_file.stderr


def test_rotation_with_key_files(pg15: Server, backup_env: dict[str, str], scratch: Path) -> None:
    env = backup_env | {"DATABASE_URL": pg15.cluster.conninfo()}
    assert run_cli("backup", env=env).code == 0
    new_key = scratch / "new.key"
    new_key.write_text(generate_key_text() + "\n")
    new_key.chmod(0o644)
    loose = run_cli("key", "rotate", "--new-key-file", str(new_key), env=env)
    assert loose.code == 2 and f"run `chmod 600 {new_key}`" in loose.stderr
    new_key.chmod(0o600)
    rotated = run_cli("key", "rotate", "--new-key-file", str(new_key), env=env)
    assert rotated.code == 0, rotated.stderr
    assert "point PGDR_ENCRYPTION_KEY" in rotated.stdout
    env_new = {k: v for k, v in env.items() if k != "PGDR_ENCRYPTION_KEY"}
    env_new["PGDR_ENCRYPTION_KEY_FILE"] = str(new_key)
    new_key.chmod(0o640)
    group_readable = run_cli("backup", "verify", env=env_new)
    assert group_readable.code == 2 and "accessible by group or others (mode 0640)" in " ".join(
        group_readable.stderr.split()
    )
    new_key.chmod(0o600)
    restored = run_cli("restore", "latest", "--to", str(scratch / "r"), env=env_new)
    assert restored.code == 0, restored.stderr


def test_incremental_backup_on_18(
    pg18: Server, repo: Repository, scratch: Path, settings: PgdrSettings
) -> None:
    with psycopg.connect(pg18.cluster.conninfo(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET summarize_wal = on")
        conn.execute("SELECT pg_reload_conf()")
    db = pg18.new_database()
    dbname = str(psycopg.conninfo.conninfo_to_dict(db)["dbname"])
    add_rows(db, "base_rows", 1000)
    full = take_backup(repo, pg18.cluster.conninfo())
    add_rows(db, "incr_rows", 2000)
    incr = take_backup(repo, pg18.cluster.conninfo(), incremental=True)
    assert incr.kind == "incremental" and incr.parent == full.id
    assert incr.stored_size < full.stored_size
    add_rows(db, "incr2_rows", 3000)
    incr2 = take_backup(repo, pg18.cluster.conninfo(), incremental=True)
    assert incr2.parent == incr.id

    target = scratch / "combined"
    unheld: set[str] = set()
    seen: set[str] = set()

    def every_staging_held(_done: int) -> None:
        # a restore or `pgdr cleanup` in another PID namespace judges these by their lock
        for path in scratch.glob(".combined.pgdr-*"):
            seen.add(path.name)
            if not _claimed_by_someone(path):
                unheld.add(path.name)

    result = restore_backup(repo, incr2.id, target, progress=every_staging_held)
    assert result.chain == [full.id, incr.id, incr2.id]
    assert len(seen) == 4 and not unheld, (seen, unheld)  # the result's and each backup's
    assert not list(scratch.glob(".combined.pgdr-*"))
    cluster = adopt_restored(settings, target, 18, scratch / "cluster")
    cluster.start()
    try:
        url = cluster.conninfo(dbname)
        assert count_rows(url, "base_rows") == 1000
        assert count_rows(url, "incr_rows") == 2000
        assert count_rows(url, "incr2_rows") == 3000
    finally:
        cluster.stop()


def test_incremental_refused_on_15(pg15: Server, backup_env: dict[str, str]) -> None:
    env = backup_env | {"DATABASE_URL": pg15.cluster.conninfo()}
    assert run_cli("backup", env=env).code == 0
    result = run_cli("backup", "--incremental", env=env)
    assert result.code == 2
    assert "PostgreSQL 17 or later" in result.stderr


@pytest.mark.slow
def test_rotation_rewraps_the_wal_keyring_and_pitr_works_without_the_old_key(
    walenv18: WalEnv, tmp_path: Path
) -> None:
    """Stream WAL, back up, rotate, delete the old key, PITR to after the rotation: exact rows."""
    w = walenv18
    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    write_key_file(old_key, generate_key_text())
    write_key_file(new_key, generate_key_text())
    w.env["PGDR_ENCRYPTION_KEY_FILE"] = str(old_key)
    stream = w.start_stream()
    w.insert(20)
    backup(w)
    w.insert(5)
    rotated = w.cli("key", "rotate", "--new-key-file", str(new_key), "--json")
    assert rotated.code == 0, rotated.stderr
    report = json.loads(rotated.stdout)
    assert report["rewrapped"] == {"primary": 1}
    assert report["wal_keyring"] == {"primary": "rewrapped"}
    w.stop_stream(stream)
    old_key.unlink()
    w.env["PGDR_ENCRYPTION_KEY_FILE"] = str(new_key)
    stream = w.start_stream()  # wait_streamed below runs `wal status` with the new key alone
    w.insert(10)
    moment = w.sql("SELECT clock_timestamp()")[0][0]
    w.insert(5)
    wait_streamed(w)
    restored = restore(w, "--target-time", moment.isoformat())
    assert ids(restored["url"]) == committed_by(w, moment)
    assert len(committed_by(w, moment)) == 35
    stop_restored(w, restored)
    w.stop_stream(stream)


def test_rotation_rewraps_dumps_and_exports_and_resumes(
    pg18: Server, backup_env: dict[str, str], tmp_path: Path
) -> None:
    """Dumps and exports are sealed under the master key too: rotated, readable with the new
    key alone; an interrupted rotation (one manifest still old) is finished by running again."""
    env = backup_env | {"DATABASE_URL": pg18.new_database()}
    dump_id = json.loads(run_cli("dump", "--json", env=env).stdout)["id"]
    export = run_cli("export", "--tables", "chatbots", "--json", env=env)
    export_id = json.loads(export.stdout)["stored_as"]
    export_manifest = tmp_path / "repo" / "dumps" / export_id / "manifest.json"
    sealed_by_old = export_manifest.read_bytes()
    new_key = tmp_path / "new.key"
    write_key_file(new_key, generate_key_text())
    rotate = ("key", "rotate", "--new-key-file", str(new_key), "--json")
    rotated = run_cli(*rotate, env=env)
    assert rotated.code == 0, rotated.stderr
    report = json.loads(rotated.stdout)
    assert report["rewrapped_dumps"] == {"primary": 2} and report["damaged"] == {"primary": []}

    old_only = run_cli("dump", "list", "--json", env=env)  # the old key no longer opens them
    assert old_only.code == 2 and dump_id in old_only.stderr and export_id in old_only.stderr
    assert {d["id"] for d in json.loads(old_only.stdout)["unreadable"]} == {dump_id, export_id}

    export_manifest.write_bytes(sealed_by_old)  # as if the rotation stopped before the export
    resumed = run_cli(*rotate, env=env)
    assert resumed.code == 0, resumed.stderr
    again = json.loads(resumed.stdout)
    assert again["rewrapped_dumps"] == {"primary": 1} and again["already_dumps"] == {"primary": 1}

    env_new = {k: v for k, v in env.items() if k != "PGDR_ENCRYPTION_KEY"}
    env_new["PGDR_ENCRYPTION_KEY_FILE"] = str(new_key)
    listed = run_cli("dump", "list", "--json", env=env_new)
    assert listed.code == 0, listed.stderr
    assert [d["id"] for d in json.loads(listed.stdout)["dumps"]] == [dump_id, export_id]
    for object_id in (dump_id, export_id):
        checked = run_cli("dump", "verify", object_id, env=env_new)
        assert checked.code == 0, checked.stdout + checked.stderr
    back = run_cli("restore-table", "chatbots", "--from", dump_id, "--as", "cb", env=env_new)
    assert back.code == 0, back.stderr
    shown = json.loads(run_cli("key", "show", "--json", env=env_new).stdout)
    assert shown["sealed_with"] == [report["new_key_id"]] and shown["opens_repository"]
