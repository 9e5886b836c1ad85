"""`pgdr check` against real ConvoAI data with injected corruption (PostgreSQL 18 and 15)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest

from conftest import Server, run_cli
from pgdr.integrity import CheckOptions, Report, run_check
from pgdr.profile import load_profile

CONVOAI = load_profile("convoai")


def sql(conninfo: str, *statements: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def scalar(conninfo: str, query: str) -> object:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
        assert row is not None
        return row[0]


def found(report: Report, code: str, name: str | None = None) -> list[dict[str, object]]:
    return [
        f
        for f in report.as_dict()["findings"]
        if f["code"] == code and (name is None or f["name"] == name)
    ]


def test_clean_sample_has_no_findings(server: Server) -> None:
    db = server.new_database()
    report = run_check(db, CONVOAI, CheckOptions(vectors=True))
    data = report.as_dict()
    assert data["findings"] == []
    assert data["status"] == "ok"
    assert {t["table"] for t in data["tables"]} >= {"public.users", "public.embeddings"}
    users = next(t for t in data["tables"] if t["table"] == "public.users")
    assert users["rows"] == scalar(db, "SELECT count(*) FROM users")
    sources = {s["source"]: s for s in data["embeddings"]}
    assert sources["embeddings"]["with_vector"] == scalar(db, "SELECT count(*) FROM embeddings")
    assert sources["embeddings"]["groups"] == []


def test_orphans_from_deleted_parents(server: Server) -> None:
    db = server.new_database()
    victim = scalar(db, "SELECT user_id FROM chatbots ORDER BY id LIMIT 1")
    bots = scalar(db, f"SELECT count(*) FROM chatbots WHERE user_id = '{victim}'")
    sql(
        db,
        # a restore or a replica-mode bulk load bypasses the foreign key triggers
        "SET session_replication_role = replica",
        f"DELETE FROM users WHERE id = '{victim}'",
    )
    report = run_check(db, CONVOAI)
    orphans = [f for f in found(report, "orphans") if f["table"] == "public.chatbots"]
    assert len(orphans) == 1
    assert orphans[0]["count"] == bots
    assert orphans[0]["details"]["source"] == "catalog+profile"
    assert str(victim) not in orphans[0]["samples"]  # samples are the child's keys
    assert orphans[0]["severity"] == "critical"
    assert report.critical >= 1


def test_not_valid_and_dropped_foreign_keys(db18: str) -> None:
    bot = scalar(db18, "SELECT id FROM chatbots ORDER BY id LIMIT 1")
    lost = scalar(db18, f"SELECT count(*) FROM embeddings WHERE chatbot_id = '{bot}'")
    sql(
        db18,
        # a migration dropped the FK and forgot it: only the profile still knows the relation
        "ALTER TABLE embeddings DROP CONSTRAINT embeddings_chatbot_id_fkey",
        "ALTER TABLE conversations DROP CONSTRAINT conversations_chatbot_id_fkey",
        "INSERT INTO conversations (id, chatbot_id, visitor_id) "
        "VALUES (gen_random_uuid(), gen_random_uuid(), 'ghost')",
        "ALTER TABLE conversations ADD CONSTRAINT conversations_chatbot_id_fkey "
        "FOREIGN KEY (chatbot_id) REFERENCES chatbots (id) NOT VALID",
        "SET session_replication_role = replica",
        f"DELETE FROM chatbots WHERE id = '{bot}'",
    )
    report = run_check(db18, CONVOAI)
    by_table = {f["table"]: f for f in found(report, "orphans")}
    emb = by_table["public.embeddings"]
    assert emb["count"] == lost
    assert emb["details"]["source"] == "profile"
    conv = by_table["public.conversations"]
    assert conv["details"]["validated"] is False
    assert "NOT VALID" in str(conv["message"])
    assert conv["count"] >= 1


def test_missing_and_wrong_dimension_vectors(db18: str) -> None:
    sql(
        db18,
        "DROP INDEX embeddings_embedding_hnsw",
        # migration 005 recreated the column without its dimension
        "ALTER TABLE embeddings ALTER COLUMN embedding TYPE extensions.vector",
        "UPDATE embeddings SET embedding = NULL WHERE id IN (SELECT e.id FROM embeddings e "
        "JOIN chatbots c ON c.id = e.chatbot_id WHERE c.status = 'ready' ORDER BY e.id LIMIT 3)",
        "UPDATE embeddings SET embedding = '[1,2,3]' WHERE id = (SELECT max(id) FROM embeddings)",
        "UPDATE embeddings SET embedding = array_fill(0.5::real, ARRAY[1535])::extensions.vector "
        "WHERE id = (SELECT min(id) FROM embeddings WHERE embedding IS NOT NULL)",
        "UPDATE knowledge_base SET embedding = NULL WHERE id = (SELECT min(id) FROM "
        "knowledge_base WHERE enabled)",
    )
    report = run_check(db18, CONVOAI)
    missing = {f["name"]: f for f in found(report, "missing_vector")}
    assert missing["embeddings"]["count"] == 3
    assert missing["knowledge_base"]["count"] == 1
    wrong = found(report, "wrong_dimension", "embeddings")
    assert wrong[0]["count"] == 2
    summary = next(s for s in report.as_dict()["embeddings"] if s["source"] == "embeddings")
    assert summary["missing_vector"] == 3
    assert summary["groups"]
    assert sum(g["wrong_dimension"] for g in summary["groups"]) == 2


def test_vector_contents_zero_vectors(db18: str) -> None:
    sql(
        db18,
        "UPDATE embeddings SET embedding = array_fill(0::real, ARRAY[1536])::extensions.vector "
        "WHERE id IN (1, 2)",
    )
    fast = run_check(db18, CONVOAI)
    assert found(fast, "zero_vector") == []
    assert any("--vectors" in n for n in fast.notes)
    full = run_check(db18, CONVOAI, CheckOptions(vectors=True))
    zero = found(full, "zero_vector", "embeddings")
    assert zero[0]["count"] == 2
    assert zero[0]["severity"] == "warning"
    assert sorted(zero[0]["samples"]) == ["1", "2"]


def test_arrays_without_pgvector(pg15: Server) -> None:
    db = pg15.new_database()
    sql(
        db,
        "UPDATE embeddings SET embedding[7] = 'NaN' WHERE id = 1",
        "UPDATE embeddings SET embedding[9] = '-Infinity' WHERE id = 2",
        "UPDATE embeddings SET embedding = embedding[1:100] WHERE id = 3",
        "UPDATE knowledge_base SET embedding = array_fill(0::real, ARRAY[1536]) WHERE id = 1",
    )
    report = run_check(db, CONVOAI, CheckOptions(vectors=True))
    assert any("pgvector is not installed" in n for n in report.notes)
    assert found(report, "non_finite", "embeddings")[0]["count"] == 2
    assert found(report, "wrong_dimension", "embeddings")[0]["samples"] == ["3"]
    assert found(report, "zero_vector", "knowledge_base")[0]["count"] == 1


def test_rules_and_p0_when_over_ten_percent(db18: str) -> None:
    ready = scalar(db18, "SELECT id FROM chatbots WHERE status = 'ready' ORDER BY id LIMIT 1")
    sql(
        db18,
        "ALTER TABLE chatbots DROP CONSTRAINT chatbots_status_check",
        f"UPDATE chatbots SET status = 'zombie' WHERE id <> '{ready}'",
        f"DELETE FROM embeddings WHERE chatbot_id = '{ready}'",
    )
    report = run_check(db18, CONVOAI)
    status = found(report, "rule", "chatbot_status_allowed")[0]
    assert status["severity"] == "critical"
    assert status["priority"] == "P0"  # every chatbot but one: far over 10% of the table
    empty = found(report, "rule", "ready_chatbot_has_embeddings")[0]
    assert empty["severity"] == "warning"
    assert empty["priority"] == "P2"
    assert empty["samples"] == [str(ready)]
    assert report.as_dict()["summary"]["priority"] == "P0"


def test_cli_exit_codes_and_json(db18: str, cli_env: dict[str, str]) -> None:
    env = cli_env | {"DATABASE_URL": db18}
    ok = run_cli("check", "--json", env=env)
    assert ok.code == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "ok"
    sql(db18, "UPDATE embeddings SET embedding = NULL")
    bad = run_cli("check", "--json", env=env)
    assert bad.code == 1
    data = json.loads(bad.stdout)
    assert data["status"] == "failed"
    assert data["summary"]["critical"] >= 1
    assert "critical finding" in bad.stderr
    human = run_cli("check", env=env)
    assert human.code == 1
    assert "missing_vector" not in human.stdout  # people read sentences, not codes
    assert "have no vector" in human.stdout
    assert "chatbot_id with problems" in human.stdout  # the per-chatbot summary


def test_profile_naming_missing_table_and_column(db18: str, tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text(
        'name = "broken"\n'
        '[[tables]]\nname = "invoices"\n'
        '[[tables]]\nname = "users"\n'
        '[[relations]]\nchild = "chatbots"\nchild_columns = ["owner_id"]\nparent = "users"\n'
        '[[embeddings]]\nname = "e"\ntable = "embeddings"\ntext = "content"\n'
        'vector = "vec"\ndimension = 1536\n'
        '[[rules]]\nname = "r"\ntable = "invoices"\nviolation = "true"\n'
    )
    report = run_check(db18, load_profile(str(profile)))
    missing = found(report, "table_missing")
    assert missing[0]["table"] == "public.invoices"
    assert missing[0]["severity"] == "critical"
    mismatches = [str(f["message"]) for f in found(report, "profile_mismatch")]
    assert any("public.chatbots.owner_id, which does not exist" in m for m in mismatches)
    assert any("public.embeddings.vec, which does not exist" in m for m in mismatches)
    assert any("public.invoices, which does not exist" in s.reason for s in report.skipped)


def test_bad_rule_sql_is_skipped_with_reason(db18: str, tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text(
        'name = "rules"\n[[tables]]\nname = "users"\n'
        '[[rules]]\nname = "typo"\ntable = "users"\nviolation = "emial IS NULL"\n'
        '[[rules]]\nname = "fine"\ntable = "users"\nviolation = "email NOT LIKE \'%@%\'"\n'
        'severity = "critical"\n'
    )
    sql(db18, "UPDATE users SET email = 'nobody' WHERE id = (SELECT id FROM users LIMIT 1)")
    report = run_check(db18, load_profile(str(profile)))
    assert any("typo" in s.reason and "emial" in s.reason for s in report.skipped)
    assert found(report, "rule", "fine")[0]["count"] == 1


def test_role_without_privileges_skips_and_says_why(pg18: Server) -> None:
    db = pg18.new_database()
    sql(
        db,
        "DROP ROLE IF EXISTS pgdr_reader",
        "CREATE ROLE pgdr_reader LOGIN",
        "GRANT SELECT ON users, chatbots TO pgdr_reader",
    )
    limited = db.replace("postgresql://postgres@", "postgresql://pgdr_reader@")
    report = run_check(limited, CONVOAI)
    reasons = " ".join(s.reason for s in report.skipped)
    assert "role pgdr_reader may not read public.embeddings (needs SELECT)" in reasons
    # what it may read is still checked
    assert {t["table"] for t in report.as_dict()["tables"]} >= {"public.users", "public.chatbots"}


def test_statement_timeout_reports_partial_results(db18: str, tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text(
        'name = "slow"\n[[tables]]\nname = "users"\n[[tables]]\nname = "chatbots"\n'
        '[[rules]]\nname = "slow"\ntable = "chatbots"\n'
        'violation = "pg_sleep(0.5) IS NULL"\n'
    )
    report = run_check(db18, load_profile(str(profile)), CheckOptions(timeout_s=0.3))
    partial = [s for s in report.skipped if s.partial]
    assert partial
    assert "statement timeout" in partial[0].reason
    assert report.as_dict()["summary"]["partial"] is True
    assert "public.users" in {t["table"] for t in report.as_dict()["tables"]}


def _seq_scans(conninfo: str, table: str) -> int:
    value = scalar(
        conninfo, f"SELECT coalesce(seq_scan, 0) FROM pg_stat_user_tables WHERE relname = '{table}'"
    )
    return int(value)  # type: ignore[call-overload]


@pytest.mark.parametrize("vectors", [False, True])
def test_every_table_is_read_once(db18: str, vectors: bool) -> None:
    """One aggregate query per table (plus catalog queries), never one per rule or row."""
    before = _seq_scans(db18, "users")
    run_check(db18, CONVOAI, CheckOptions(vectors=vectors))
    deadline = time.monotonic() + 10
    while _seq_scans(db18, "users") == before and time.monotonic() < deadline:
        time.sleep(0.2)  # the checking backend flushes its statistics as it exits
    # users is scanned for its own pass and as the parent of chatbots and subscriptions
    assert 1 <= _seq_scans(db18, "users") - before <= 3


@pytest.mark.parametrize("dimension", [3, 384, 1536])
def test_dimension_by_stored_size_is_exact(server: Server, tmp_path: Path, dimension: int) -> None:
    """Inline, short, external and compressed values of the right and neighbouring dimensions."""
    db = server.new_database()
    vtype = "extensions.vector" if server.major >= 18 else "real[]"
    cast = "::extensions.vector" if server.major >= 18 else ""
    sql(
        db,
        f"CREATE TABLE vecs (id int PRIMARY KEY, pad text, v {vtype})",
        "ALTER TABLE vecs ALTER COLUMN pad SET STORAGE EXTERNAL",
    )
    rows = []
    for i, (dims, pad) in enumerate(
        [(d, p) for d in (dimension - 1, dimension, dimension + 1) for p in (0, 3000)]
    ):
        # pad pushes the row over the TOAST threshold: v may go out of line
        rows.append(
            f"({i}, repeat('x', {pad}), array_fill(({i} + 0.5)::real, ARRAY[{dims}]){cast})"
        )
    rows.append(
        f"(100, '', array_fill(0::real, ARRAY[{dimension}]){cast})"  # compresses (real[] only)
    )
    sql(db, "INSERT INTO vecs VALUES " + ", ".join(rows))
    profile = tmp_path / "p.toml"
    profile.write_text(
        'name = "v"\n[[tables]]\nname = "vecs"\ncreated_at = "pad"\n'
        f'[[embeddings]]\nname = "v"\ntable = "vecs"\ntext = "pad"\nvector = "v"\n'
        f"dimension = {dimension}\n"
    )
    report = run_check(db, load_profile(str(profile)))
    wrong = found(report, "wrong_dimension", "v")
    assert wrong[0]["count"] == 4
    assert sorted(int(s) for s in wrong[0]["samples"]) == [0, 1, 4, 5]


def test_double_precision_arrays(pg15: Server, tmp_path: Path) -> None:
    db = pg15.new_database()
    sql(
        db,
        "CREATE TABLE docs (id int PRIMARY KEY, v double precision[])",
        "INSERT INTO docs SELECT g, array_fill(g::float8, ARRAY[8]) FROM generate_series(1, 6) g",
        "UPDATE docs SET v[2] = 'Infinity' WHERE id = 1",
        "UPDATE docs SET v = array_fill(0::float8, ARRAY[8]) WHERE id = 2",
        "UPDATE docs SET v = '{}' WHERE id = 3",
        "UPDATE docs SET v = NULL WHERE id = 4",
    )
    profile = tmp_path / "p.toml"
    profile.write_text(
        'name = "d"\n[[tables]]\nname = "docs"\ncreated_at = ""\n'
        '[[embeddings]]\nname = "d"\ntable = "docs"\ntext = "id::text"\nvector = "v"\n'
        "dimension = 8\n"
    )
    report = run_check(db, load_profile(str(profile)), CheckOptions(vectors=True))
    assert found(report, "profile_mismatch") == []  # created_at = "" means none
    assert found(report, "non_finite", "d")[0]["samples"] == ["1"]
    assert found(report, "zero_vector", "d")[0]["samples"] == ["2"]
    assert found(report, "wrong_dimension", "d")[0]["samples"] == ["3"]
    assert found(report, "missing_vector", "d")[0]["samples"] == ["4"]  # no rule: all need one


def test_unreachable_database_is_one_sentence(cli_env: dict[str, str]) -> None:
    env = cli_env | {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"}
    result = run_cli("check", env=env)
    assert result.code == 3
    assert "Cannot connect to the database" in result.stderr
    assert "Traceback" not in result.stderr
