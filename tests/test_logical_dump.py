"""``pgdr dump``: pg_dump of the server's own major version into the repository, read back."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from conftest import Server, run_cli
from fixtures.wal import WalEnv
from pgdr.backup import Repository
from pgdr.backup.manifest import DUMPS
from pgdr.core.errors import ConfigError
from pgdr.logical.archive import open_dump
from pgdr.logical.tools import binaries_for
from test_bad_input import assert_one_sentence
from test_recover_rows import contents


def test_dump_list_verify_and_restore_test(
    server: Server, backup_env: dict[str, str], tmp_path: Path
) -> None:
    env = backup_env | {"DATABASE_URL": server.new_database()}
    made = run_cli("dump", "--label", "before migration 006", "--keep", "--json", env=env)
    assert made.code == 0, made.stderr
    dump = json.loads(made.stdout)
    assert dump["kind"] == "dump" and dump["pg_major"] == server.major
    assert dump["database"] and dump["label"] == "before migration 006"
    assert list((tmp_path / "repo" / "dumps" / dump["id"]).glob("chunks/*"))
    assert not (tmp_path / "repo" / "backups").exists()  # a second kind, beside base backups

    listed = json.loads(run_cli("dump", "list", "--json", env=env).stdout)
    assert [d["id"] for d in listed["dumps"]] == [dump["id"]]
    backups = run_cli("backup", "list", "--json", env=env)
    assert json.loads(backups.stdout)["backups"] == []

    checked = run_cli("dump", "verify", "latest", "--restore-test", "--json", env=env)
    assert checked.code == 0, checked.stdout + checked.stderr
    result = json.loads(checked.stdout)
    assert result["passed"] and "public.chatbots" in result["tables"]
    assert result["restore_test"]["passed"], result["restore_test"]
    assert not list((Path(env["PGDR_HOME"]) / "scratch").glob("dump-test-*"))


def test_a_damaged_chunk_fails_verification(
    pg18: Server, backup_env: dict[str, str], tmp_path: Path
) -> None:
    env = backup_env | {"DATABASE_URL": pg18.new_database()}
    dump = json.loads(run_cli("dump", "--json", env=env).stdout)
    quick = run_cli("dump", "verify", dump["id"], "--json", env=env)
    assert quick.code == 0, quick.stderr
    assert json.loads(quick.stdout)["not_checked"]  # says the restore was not tried
    chunk = sorted((tmp_path / "repo" / "dumps" / dump["id"] / "chunks").iterdir())[0]
    data = bytearray(chunk.read_bytes())
    data[100] ^= 1
    chunk.write_bytes(bytes(data))
    bad = run_cli("dump", "verify", dump["id"], "--json", env=env)
    assert bad.code == 1
    assert "Chunk 1" in json.loads(bad.stdout)["problem"]


def test_schema_only_as_sql_for_version_control(
    server: Server, backup_env: dict[str, str], tmp_path: Path
) -> None:
    env = backup_env | {"DATABASE_URL": server.new_database()}
    out = tmp_path / "schema.sql"
    made = run_cli("dump", "--schema-only", "--out", str(out), env=env)
    assert made.code == 0, made.stderr
    text = out.read_text()
    assert "CREATE TABLE public.chatbots" in text and "COPY " not in text
    again = run_cli("dump", "--schema-only", "--out", str(out), env=env)
    assert again.code == 2 and "--force" in again.stderr
    assert run_cli("dump", "--out", str(out), env=env).code == 2
    stored = json.loads(run_cli("dump", "--schema-only", "--json", env=env).stdout)
    assert stored["kind"] == "schema-dump"


def test_a_dump_from_a_newer_postgresql_is_refused(
    pg18: Server, backup_env: dict[str, str], repo: Repository
) -> None:
    """A dump whose authentic manifest says PostgreSQL 99: refused before pg_restore runs."""
    with pytest.raises(ConfigError, match="newer than any installed"):
        binaries_for(99, "Dump x")
    url = pg18.new_database()
    env = backup_env | {"DATABASE_URL": url}
    made = run_cli("dump", "--json", env=env)
    assert made.code == 0, made.stderr
    dump = open_dump(repo, json.loads(made.stdout)["id"])
    manifest = dump.manifest
    manifest.pg_major, manifest.pg_version = 99, "99.0"
    manifest.wrapped_key = repo.master_key.wrap(dump.data_key)
    manifest.sign_with(dump.data_key)  # as if PostgreSQL 99's pgdr had written it
    repo.store.put(repo.manifest_key(manifest.id, DUMPS), manifest.to_json())
    before = contents(url)
    for args in (
        ("dump", "verify", manifest.id, "--restore-test"),
        ("restore-table", "chatbots", "--from", manifest.id, "--replace", "--force"),
    ):
        refused = run_cli(*args, env=env)
        assert refused.code == 2, refused.stdout + refused.stderr
        line = assert_one_sentence(refused.stderr)
        assert "PostgreSQL 99, newer than any installed" in line
    assert contents(url) == before
    assert not list((Path(env["PGDR_HOME"]) / "scratch").glob("dump-test-*"))


def test_directory_format_with_jobs_verifies_and_restores_a_table(
    server: Server, backup_env: dict[str, str]
) -> None:
    url = server.new_database()
    env = backup_env | {"DATABASE_URL": url}
    made = run_cli("dump", "--jobs", "2", "--json", env=env)
    assert made.code == 0, made.stderr
    assert json.loads(made.stdout)["format"] == "directory"
    checked = run_cli("dump", "verify", "latest", "--json", env=env)
    assert checked.code == 0, checked.stdout + checked.stderr
    assert "public.chatbots" in json.loads(checked.stdout)["tables"]
    back = run_cli("restore-table", "chatbots", "--from", "latest", "--as", "cb", "--json", env=env)
    assert back.code == 0, back.stderr
    assert contents(url)["chatbots"][0] == json.loads(back.stdout)["rows"] > 0
    with psycopg.connect(url, autocommit=True) as conn:
        same = conn.execute("SELECT count(*) FROM (TABLE chatbots EXCEPT TABLE cb) d").fetchone()
    assert same is not None and same[0] == 0
    assert run_cli("dump", "--jobs", "0", env=env).code == 2


def test_a_dump_of_the_postgres_database_passes_its_restore_test(
    walenv18: WalEnv, backup_env: dict[str, str]
) -> None:
    """The throwaway cluster has a `postgres` database of its own (as it has every database a
    fresh cluster has): the dump of pgdr's default target still restores as pg_restore
    --create restores it, its CREATE DATABASE and database-level settings included."""
    w = walenv18
    w.sql("ALTER DATABASE postgres SET work_mem = '7MB'")
    w.sql("COMMENT ON DATABASE postgres IS 'the application'")
    env = backup_env | {"DATABASE_URL": w.conninfo}  # a fresh cluster's own postgres database
    made = run_cli("dump", "--json", env=env)
    assert made.code == 0, made.stderr
    assert json.loads(made.stdout)["database"] == "postgres"
    checked = run_cli("dump", "verify", "latest", "--restore-test", "--json", env=env)
    assert checked.code == 0, checked.stdout + checked.stderr
    test = json.loads(checked.stdout)["restore_test"]
    assert test["passed"], test
    assert any("pg_restore --create" in step for step in test["steps"]), test
