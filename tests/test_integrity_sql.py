"""`pgdr check install-sql`: the runbook's check_referential_integrity() inside the database."""

from __future__ import annotations

import json

import psycopg
import pytest

from conftest import Server, run_cli


def rows(conninfo: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.parametrize("vectors", [False, True], ids=["sizes", "contents"])
def test_install_sql_finds_orphans_and_missing_vectors(
    server: Server, cli_env: dict[str, str], vectors: bool
) -> None:
    db = server.new_database()
    env = cli_env | {"DATABASE_URL": db}
    flags = ["--vectors"] if vectors else []
    result = run_cli("check", "install-sql", *flags, "--json", env=env)
    assert result.code == 0, result.stderr
    installed = json.loads(result.stdout)
    assert installed["function"] == "public.check_referential_integrity()"
    assert installed["checks"] > 5
    assert rows(db, "SELECT * FROM check_referential_integrity()") == []

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM users WHERE id = (SELECT user_id FROM chatbots LIMIT 1)")
        conn.execute("UPDATE knowledge_base SET embedding = NULL WHERE enabled")
    found = rows(
        db,
        "SELECT check_name, finding, severity, priority, table_name, finding_count "
        "FROM check_referential_integrity()",
    )
    by_kind = {(r[0], r[1], r[4]): r for r in found}
    orphan = by_kind[("references", "orphans", "public.chatbots")]
    assert orphan[2] == "critical"
    assert int(orphan[5]) >= 1  # type: ignore[call-overload]
    missing = by_kind[("embeddings", "missing_vector", "public.knowledge_base")]
    assert missing[3] == "P0"  # every enabled entry lost its vector


def test_install_sql_in_public_matches_the_runbook_call(db18: str, cli_env: dict[str, str]) -> None:
    env = cli_env | {"DATABASE_URL": db18}
    result = run_cli("check", "install-sql", "--schema", "public", env=env)
    assert result.code == 0, result.stderr
    assert "SELECT * FROM public.check_referential_integrity()" in result.stdout
    assert rows(db18, "SELECT * FROM check_referential_integrity()") == []


def test_install_sql_without_privilege_is_one_sentence(
    pg18: Server, cli_env: dict[str, str]
) -> None:
    db = pg18.new_database()
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS pgdr_plain")
        conn.execute("CREATE ROLE pgdr_plain LOGIN")
    env = cli_env | {"DATABASE_URL": db.replace("postgres@", "pgdr_plain@")}
    result = run_cli("check", "install-sql", env=env)
    assert result.code == 3
    assert "may not create schema public" in result.stderr
    assert "Traceback" not in result.stderr


def test_install_sql_after_a_column_rename_says_to_reinstall(
    server: Server, cli_env: dict[str, str]
) -> None:
    db = server.new_database()
    result = run_cli("check", "install-sql", env=cli_env | {"DATABASE_URL": db})
    assert result.code == 0, result.stderr
    assert rows(db, "SELECT * FROM check_referential_integrity()") == []
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ALTER TABLE chatbots RENAME COLUMN user_id TO owner_id")
    with pytest.raises(psycopg.Error) as failed:
        rows(db, "SELECT * FROM check_referential_integrity()")
    message = str(failed.value)
    assert "out of date" in message and "re-run `pgdr check install-sql`" in message
