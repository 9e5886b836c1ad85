"""`pgdr inventory`: embeddings per chatbot before a migration, checked afterwards."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import psycopg

from conftest import run_cli


def sql(conninfo: str, *statements: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_inventory_migration_005_round_trip(
    db18: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = cli_env | {"DATABASE_URL": db18, "PGDR_HOME": str(tmp_path / "home")}
    out = tmp_path / "csv"
    saved = run_cli("inventory", "--save", "--output", str(out), "--json", env=env)
    assert saved.code == 0, saved.stderr
    inventory = json.loads(saved.stdout)
    emb = inventory["sources"]["embeddings"]
    assert emb["rows"] == emb["with_vector"] > 0
    with (out / "embeddings-inventory.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["chatbot_id", "rows", "with_vector"]
    assert sum(int(r[1]) for r in rows[1:]) == emb["rows"]
    assert (out / "knowledge_base-inventory.csv").is_file()

    # migration 005: the embedding column is dropped and recreated, every vector is gone
    sql(
        db18,
        "ALTER TABLE embeddings DROP COLUMN embedding",
        "ALTER TABLE embeddings ADD COLUMN embedding extensions.vector(1536)",
    )
    after = run_cli("inventory", "compare", "--json", env=env)
    assert after.code == 1, after.stderr
    report = json.loads(after.stdout)
    vectors = next(f for f in report["findings"] if f["code"] == "vectors_short")
    assert vectors["count"] == emb["with_vector"]
    assert vectors["priority"] == "P0"
    assert not any(f["code"] == "rows_short" for f in report["findings"])

    # re-embedded: every chatbot back to its count, every vector present
    sql(
        db18,
        "UPDATE embeddings SET embedding = array_fill(0.1::real, ARRAY[1536])::extensions.vector",
    )
    done = run_cli("inventory", "compare", inventory["id"], "--json", env=env)
    assert done.code == 0, done.stdout
    sources = {s["source"]: s for s in json.loads(done.stdout)["sources"]}
    assert sources["embeddings"]["groups_complete"] == sources["embeddings"]["groups_before"]


def test_inventory_finds_chatbot_that_lost_rows(
    db18: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = cli_env | {"DATABASE_URL": db18, "PGDR_HOME": str(tmp_path)}
    assert run_cli("inventory", "--save", env=env).code == 0
    with psycopg.connect(db18, autocommit=True) as conn:
        row = conn.execute("SELECT chatbot_id FROM knowledge_base LIMIT 1").fetchone()
        assert row is not None
        conn.execute("DELETE FROM knowledge_base WHERE chatbot_id = %s", (row[0],))
    result = run_cli("inventory", "compare", env=env)
    assert result.code == 1
    assert "fewer rows than in the inventory" in result.stdout
    assert str(row[0])[:8] in result.stdout


def test_inventory_compare_without_inventory(
    db18: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = cli_env | {"DATABASE_URL": db18, "PGDR_HOME": str(tmp_path)}
    result = run_cli("inventory", "compare", env=env)
    assert result.code == 2
    assert "No inventory has been saved" in result.stderr
