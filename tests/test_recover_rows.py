"""``pgdr recover rows``: deleted rows and all their FK descendants back, exactly, once."""

from __future__ import annotations

import json

import psycopg

from conftest import Server, run_cli

TABLES = ("chatbots", "conversations", "messages", "embeddings", "knowledge_base", "users")


def contents(url: str) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every row's text (vectors included) per table."""
    out = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for table in TABLES:
            row = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.id::text), ''))"
                f" FROM {table} t"
            ).fetchone()
            assert row is not None
            out[table] = (int(row[0]), str(row[1]))
    return out


def busiest_chatbot(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT chatbot_id::text FROM conversations GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_deleted_chatbot_and_children_come_back_exactly(
    pg18: Server, cli_env: dict[str, str]
) -> None:
    source, target = pg18.new_database(), pg18.new_database()
    chatbot = busiest_chatbot(source)
    expected = contents(source)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("DELETE FROM chatbots WHERE id = %s", (chatbot,))
        # the target is in read-only mode, as the runbook wants during a recovery
        conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET default_transaction_read_only = on')
    assert contents(target) != expected
    env = cli_env | {"DATABASE_URL": target, "SCRATCH_URL": source}
    args = ("recover", "rows", "--from-env", "SCRATCH_URL", "--table", "chatbots")
    result = run_cli(*args, "--key", chatbot, "--with-children", "--json", env=env)
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    order = [t["table"] for t in data["tables"]]
    assert order[0] == "public.chatbots"
    assert order.index("public.conversations") < order.index("public.messages")
    assert set(order) == {f"public.{t}" for t in TABLES if t != "users"}
    assert data["inserted"] == data["found"] > 1
    assert contents(target) == expected
    assert source not in result.stdout + result.stderr  # the URL never leaves the environment

    again = run_cli(*args, "--key", chatbot, "--with-children", "--json", env=env)
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["inserted"] == 0
    assert contents(target) == expected


def test_without_children_only_the_row(pg18: Server, cli_env: dict[str, str]) -> None:
    source, target = pg18.new_database(), pg18.new_database()
    chatbot = busiest_chatbot(source)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("DELETE FROM chatbots WHERE id = %s", (chatbot,))
    url_file = pg18.cluster.directory.parent / f"source-url-{chatbot}"
    url_file.write_text(source + "\n")
    env = cli_env | {"DATABASE_URL": target}
    result = run_cli(
        "recover",
        "rows",
        "--from-file",
        str(url_file),
        "--table",
        "chatbots",
        "--key",
        chatbot,
        "--json",
        env=env,
    )
    url_file.unlink()
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [(t["table"], t["inserted"]) for t in data["tables"]] == [("public.chatbots", 1)]
    assert contents(target)["chatbots"] == contents(source)["chatbots"]
    assert contents(target)["conversations"][0] < contents(source)["conversations"][0]


def test_refusals(pg18: Server, cli_env: dict[str, str]) -> None:
    source = pg18.new_database()
    env = cli_env | {"DATABASE_URL": pg18.new_database(), "SCRATCH_URL": source}
    base = ("recover", "rows", "--table", "chatbots", "--key")
    unset = run_cli(*base, "x", "--from-env", "NOPE_URL", env=env)
    assert unset.code == 2 and "NOPE_URL is not set" in unset.stderr
    missing = run_cli(
        *base, "00000000-0000-0000-0000-000000000000", "--from-env", "SCRATCH_URL", env=env
    )
    assert missing.code == 3 and "No row of public.chatbots" in missing.stderr
    table = run_cli(
        "recover", "rows", "--table", "nope", "--key", "1", "--from-env", "SCRATCH_URL", env=env
    )
    assert table.code == 2 and "does not exist" in table.stderr


def test_recover_tables_repairs_and_keeps_later_rows(pg18: Server, cli_env: dict[str, str]) -> None:
    """Option B of the corruption scenario: damaged tables repaired from a copy at T."""
    copy, target = pg18.new_database(), pg18.new_database()
    expected = contents(copy)
    with psycopg.connect(target, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute("DELETE FROM users WHERE id IN (SELECT user_id FROM chatbots LIMIT 1)")
            conn.execute("UPDATE embeddings SET embedding = NULL WHERE id % 3 = 0")
        # written after the copy's moment: must survive the repair
        conn.execute(
            "INSERT INTO embeddings (chatbot_id, content) SELECT id, 'later' FROM chatbots LIMIT 1"
        )
    env = cli_env | {"DATABASE_URL": target, "COPY_URL": copy}
    result = run_cli(
        "recover",
        "tables",
        "--from-env",
        "COPY_URL",
        "--table",
        "embeddings",
        "--table",
        "users",
        "--json",
        env=env,
    )
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert {t["table"] for t in data["tables"]} == {"public.users", "public.embeddings"}
    changed = {t["table"]: t["changed"] for t in data["tables"]}
    assert changed["public.users"] == 1 and changed["public.embeddings"] > 1
    with psycopg.connect(target, autocommit=True) as conn:
        later = conn.execute("SELECT count(*) FROM embeddings WHERE content = 'later'").fetchone()
        assert later == (1,)
        conn.execute("DELETE FROM embeddings WHERE content = 'later'")
    assert contents(target) == expected
    check = run_cli("check", env=env)
    assert check.code == 0, check.stdout
