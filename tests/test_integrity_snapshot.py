"""`pgdr check snapshot` / `compare`: counts, newest rows and fingerprints before and after."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from conftest import Server, run_cli
from pgdr.integrity.snapshot import compare_snapshot, take_snapshot
from pgdr.profile import load_profile

CONVOAI = load_profile("convoai")


def sql(conninfo: str, *statements: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def codes(report_dict: dict[str, object]) -> dict[tuple[str, str], dict[str, object]]:
    return {(f["code"], f["table"]): f for f in report_dict["findings"]}  # type: ignore[attr-defined,index]


def test_snapshot_then_compare_unchanged_and_after_mass_deletion(
    db18: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = cli_env | {"DATABASE_URL": db18, "PGDR_HOME": str(tmp_path)}
    taken = run_cli("check", "snapshot", "--json", env=env)
    assert taken.code == 0, taken.stderr
    snap = json.loads(taken.stdout)
    assert Path(snap["path"]).parent == tmp_path / "records" / "snapshots"
    assert snap["tables"]["public.users"]["fingerprint"] is not None

    same = run_cli("check", "compare", "--json", env=env)
    assert same.code == 0, same.stderr
    assert json.loads(same.stdout)["findings"] == []

    sql(db18, "DELETE FROM messages WHERE id % 4 = 0")  # a quarter of the messages
    after = run_cli("check", "compare", snap["id"], "--json", env=env)
    assert after.code == 1
    found = codes(json.loads(after.stdout))
    fell = found[("rows_fell", "public.messages")]
    assert fell["severity"] == "critical"
    assert fell["priority"] == "P0"
    human = run_cli("check", "compare", env=env)
    assert human.code == 1
    assert "fewer than" in human.stdout


def test_deletions_hidden_by_inserts_and_replaced_rows(db18: str) -> None:
    before = take_snapshot(db18, CONVOAI)
    sql(
        db18,
        "SET session_replication_role = replica",
        # two old conversations gone, two new ones in: the total does not move
        "DELETE FROM conversations WHERE id IN (SELECT id FROM conversations ORDER BY id LIMIT 2)",
        "INSERT INTO conversations (id, chatbot_id, visitor_id, created_at) "
        "SELECT gen_random_uuid(), chatbot_id, 'new', now() FROM conversations LIMIT 2",
        # one user replaced by another with the same created_at
        "UPDATE users SET id = gen_random_uuid() WHERE id = (SELECT id FROM users LIMIT 1)",
    )
    found = codes(compare_snapshot(db18, before, CONVOAI).as_dict())
    lost = found[("rows_lost", "public.conversations")]
    assert lost["count"] == 2
    assert ("rows_fell", "public.conversations") not in found
    assert found[("fingerprint_changed", "public.users")]["severity"] == "warning"


def test_newest_row_went_back(db18: str) -> None:
    before = take_snapshot(db18, CONVOAI)
    sql(
        db18,
        "SET session_replication_role = replica",
        "DELETE FROM chatbots WHERE created_at = (SELECT max(created_at) FROM chatbots)",
    )
    found = codes(compare_snapshot(db18, before, CONVOAI).as_dict())
    assert ("newest_went_back", "public.chatbots") in found
    assert ("rows_fell", "public.chatbots") in found


def test_compare_against_another_database(
    pg18: Server, cli_env: dict[str, str], tmp_path: Path
) -> None:
    production = pg18.new_database()
    restored = pg18.new_database()
    sql(restored, "DROP TABLE knowledge_base")
    env = cli_env | {
        "DATABASE_URL": restored,
        "PGDR_HOME": str(tmp_path),
        "PROD_URL": production,
    }
    result = run_cli("check", "compare", "--against-env", "PROD_URL", "--json", env=env)
    assert result.code == 1, result.stderr
    found = codes(json.loads(result.stdout))
    assert found[("table_missing", "public.knowledge_base")]["severity"] == "critical"


def test_compare_bad_input_is_one_sentence(
    db18: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = cli_env | {"DATABASE_URL": db18, "PGDR_HOME": str(tmp_path)}
    none = run_cli("check", "compare", env=env)
    assert none.code == 2
    assert "No snapshot has been saved" in none.stderr
    assert "Traceback" not in none.stderr
    backup = run_cli("check", "compare", "--backup", "b1", env=env)
    assert backup.code == 2
    assert "backup repository" in backup.stderr
    unset = run_cli("check", "compare", "--against-env", "NOPE_NOT_SET", env=env)
    assert unset.code == 2
    assert "NOPE_NOT_SET is not set" in unset.stderr
    target = tmp_path / "s.json"
    assert run_cli("check", "snapshot", "--output", str(target), env=env).code == 0
    again = run_cli("check", "snapshot", "--output", str(target), env=env)
    assert again.code == 2
    assert "--force" in again.stderr
