"""``pgdr restore-table``: one table from a dump, beside the live one or in its place."""

from __future__ import annotations

import json

import psycopg

from conftest import Server, run_cli
from fixtures.wal import WalEnv
from pgdr.sample import VectorType, load_sample
from test_pitr import backup, wait_streamed
from test_recover_rows import contents


def test_beside_then_replace_keeps_foreign_keys_valid(
    server: Server, backup_env: dict[str, str]
) -> None:
    url = server.new_database()
    env = backup_env | {"DATABASE_URL": url}
    made = run_cli("dump", "--json", env=env)
    assert made.code == 0, made.stderr
    before = contents(url)["chatbots"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE chatbots ADD COLUMN tier text DEFAULT 'free'")
        conn.execute("UPDATE chatbots SET name = 'damaged'")

    beside = run_cli(
        "restore-table", "chatbots", "--from", "latest", "--as", "cb_old", "--json", env=env
    )
    assert beside.code == 0, beside.stderr
    data = json.loads(beside.stdout)
    assert data["rows"] == before[0] and data["defaulted"] == ["tier"] and not data["unmapped"]
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM cb_old WHERE name = 'damaged'").fetchone()
        assert row is not None and row[0] == 0
        conn.execute("ALTER TABLE chatbots DROP COLUMN tier")
    again = run_cli("restore-table", "chatbots", "--from", "latest", "--as", "cb_old", env=env)
    assert again.code == 2 and "--force" in again.stderr

    unconfirmed = run_cli("restore-table", "chatbots", "--from", "latest", "--replace", env=env)
    assert unconfirmed.code == 2
    replaced = run_cli(
        "restore-table", "chatbots", "--from", "latest", "--replace", "--force", "--json", env=env
    )
    assert replaced.code == 0, replaced.stderr
    assert json.loads(replaced.stdout)["replaced"]
    assert contents(url)["chatbots"] == before  # children's foreign keys still hold


def test_dropped_table_and_bad_input(pg18: Server, backup_env: dict[str, str]) -> None:
    url = pg18.new_database()
    env = backup_env | {"DATABASE_URL": url}
    assert run_cli("dump", env=env).code == 0
    expected = contents(url)["knowledge_base"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE knowledge_base")
    back = run_cli("restore-table", "knowledge_base", "--from", "latest", "--json", env=env)
    assert back.code == 0, back.stderr
    assert contents(url)["knowledge_base"] == expected

    missing = run_cli("restore-table", "no_such_table", "--from", "latest", env=env)
    assert missing.code == 2 and "is not in dump" in missing.stderr
    other = env | {"DATABASE_URL": pg18.new_database()}
    wrong = run_cli("restore-table", "chatbots", "--from", "latest", env=other)
    assert wrong.code == 2 and "not of this database" in wrong.stderr


def test_from_backup_at_a_time_beside_then_replace(walenv: WalEnv) -> None:
    """--from-backup --at: a throwaway PITR copy, the table beside the live one, then swapped in
    with its children's foreign keys kept; bad input refused in one sentence; no copy left."""
    w = walenv
    vector = VectorType.VECTOR if w.cluster.installation.has_pgvector else VectorType.ARRAY
    load_sample(w.conninfo, scale=0.01, vector_type=vector)
    stream = w.start_stream()
    backup_id = backup(w)
    w.sql("UPDATE chatbots SET name = name || ' v2' WHERE id IN (SELECT id FROM chatbots LIMIT 2)")
    w.sql("CREATE TABLE born_later (id int PRIMARY KEY)")
    good = contents(w.conninfo)
    moment = str(w.sql("SELECT clock_timestamp()::text")[0][0])
    w.sql("UPDATE chatbots SET name = 'damaged'")
    wait_streamed(w)

    beside = w.cli(
        "restore-table", "chatbots", "--from-backup", backup_id, "--at", moment, "--json"
    )
    assert beside.code == 0, beside.stdout + beside.stderr
    data = json.loads(beside.stdout)
    assert data["rows"] == good["chatbots"][0] and not data["unmapped"]
    copy = data["restored_as"]
    assert w.sql(f"SELECT count(*) FROM {copy} WHERE name = 'damaged'")[0][0] == 0
    assert w.sql(f"SELECT count(*) FROM {copy} WHERE name LIKE '%% v2'")[0][0] == 2

    unconfirmed = w.cli("restore-table", "chatbots", "--from-backup", "latest", "--replace")
    assert unconfirmed.code == 2 and "--force" in unconfirmed.stderr
    late = w.cli(
        "restore-table", "chatbots", "--from-backup", "latest", "--at", "2999-01-01", "--as", "x"
    )
    assert late.code == 1 and "recovery window" in late.stderr, late.stderr
    absent = w.cli("restore-table", "born_later", "--from-backup", backup_id)
    assert absent.code == 2 and "did not exist" in absent.stderr, absent.stderr

    replaced = w.cli(
        "restore-table", "chatbots", "--from-backup", "latest", "--at", moment,
        "--replace", "--force", "--json",
    )  # fmt: skip
    assert replaced.code == 0, replaced.stdout + replaced.stderr
    assert json.loads(replaced.stdout)["replaced"]
    assert contents(w.conninfo) == good  # children's foreign keys still hold
    assert not list((w.cluster.settings.home / "scratch").iterdir())
    w.stop_stream(stream)


def test_dropped_table_from_backup(walenv18: WalEnv) -> None:
    """A table dropped from the live database comes back from the backup's throwaway copy."""
    w = walenv18
    load_sample(w.conninfo, scale=0.01)
    stream = w.start_stream()
    backup_id = backup(w)
    good = contents(w.conninfo)
    w.sql("DROP TABLE knowledge_base")
    dropped = w.cli("restore-table", "knowledge_base", "--from-backup", backup_id, "--json")
    assert dropped.code == 0, dropped.stdout + dropped.stderr
    assert json.loads(dropped.stdout)["rows"] == good["knowledge_base"][0]
    assert contents(w.conninfo) == good
    assert not list((w.cluster.settings.home / "scratch").iterdir())
    w.stop_stream(stream)
