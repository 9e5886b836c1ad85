"""``pgdr restore-table``: one table from a dump, beside the live one or in its place."""

from __future__ import annotations

import json

import psycopg

from conftest import Server, run_cli
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
