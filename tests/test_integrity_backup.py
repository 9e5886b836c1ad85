"""`pgdr check compare --backup ID`: the live database against a backup, restored aside."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from conftest import Server, run_cli


def test_compare_with_a_backup_finds_a_deletion(
    pg18: Server, backup_env: dict[str, str], pgdr_home: Path
) -> None:
    db = pg18.new_database()
    env = backup_env | {"DATABASE_URL": db}
    taken = run_cli("backup", "--json", env=env)
    assert taken.code == 0, taken.stderr
    same = run_cli("check", "compare", "--backup", "latest", "--json", env=env)
    assert same.code == 0, same.stderr
    assert json.loads(same.stdout)["baseline"]["id"].startswith("backup ")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DELETE FROM chatbots WHERE id = (SELECT chatbot_id FROM embeddings LIMIT 1)")
    after = run_cli("check", "compare", "--backup", "latest", "--json", env=env)
    assert after.code == 1, after.stderr
    tables = {f["table"] for f in json.loads(after.stdout)["findings"]}
    assert "public.chatbots" in tables and "public.embeddings" in tables
    assert not list((pgdr_home / "scratch").glob("compare-*"))  # the scratch copy is gone
    both = run_cli("check", "compare", "snap", "--backup", "latest", env=env)
    assert both.code == 2 and "not several" in both.stderr
