"""``pgdr audit``: the optional trigger trail, and ``wal find`` saying who ran a transaction."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from conftest import Server, run_cli
from fixtures.wal import WalEnv
from test_pitr import wait_streamed
from test_wal_find import find, in_one_transaction


def audit(w: WalEnv, *args: str) -> dict[str, Any]:
    result = w.cli("audit", *args, "--json")
    assert result.code == 0, result.stdout + result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def pgdr_triggers(w: WalEnv) -> list[tuple[object, ...]]:
    return w.sql(
        "SELECT tgrelid::regclass::text, tgname FROM pg_trigger "
        "WHERE tgname LIKE 'pgdr_audit%%' ORDER BY 1, 2"
    )


def test_install_show_who_and_remove(walenv: WalEnv) -> None:
    w = walenv
    stream = w.start_stream()
    w.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    w.sql("CREATE TABLE tags (name text)")  # no primary key: the whole old row is the key
    w.sql("INSERT INTO items SELECT g, 'n' FROM generate_series(1, 20) g")
    w.sql("INSERT INTO tags VALUES ('a'), ('b')")
    w.sql("CREATE ROLE cleaner; GRANT SELECT, DELETE ON items TO cleaner")
    # no base backup needed: wal find reads the WAL from the first segment
    missing = w.cli("audit", "install", "--tables", "nope")
    assert missing.code == 2 and "does not exist" in missing.stderr
    assert not w.sql("SELECT to_regclass('pgdr_audit')")[0][0]  # rolled back, nothing left

    first = audit(w, "install", "--tables", "items", "--tables", "tags")
    assert first["added"] == ["items", "tags"]
    again = audit(w, "install", "--tables", "items", "--tables", "tags")
    assert again["added"] == [] and again["tables"] == ["items", "tags"]  # idempotent
    assert len(pgdr_triggers(w)) == 4

    mass = in_one_transaction(w, "SET LOCAL ROLE cleaner", "DELETE FROM items WHERE id > 10")
    w.sql("UPDATE tags SET name = 'c' WHERE name = 'a'")
    w.sql("TRUNCATE tags")
    wait_streamed(w)

    shown = audit(w, "show", "--limit", "100")
    ops = [(e["table"], e["op"]) for e in shown["entries"]]
    assert ops[:2] == [("public.tags", "TRUNCATE"), ("public.tags", "UPDATE")]
    deleted = [e for e in shown["entries"] if e["op"] == "DELETE"]
    assert sorted(e["key"]["id"] for e in deleted) == list(range(11, 21))
    assert {e["xid"] for e in deleted} == {mass % 2**32} and deleted[0]["role"].endswith(
        " as cleaner"
    )
    assert shown["entries"][1]["key"] == {"name": "a"}
    assert len(audit(w, "show", "--table", "items")["entries"]) == 10

    data = find(w, "--table", "items", "--op", "delete")
    suspect = next(t for t in data["transactions"] if t["xid"] == data["suspect"])
    assert suspect["xid"] == mass and suspect["audit"]["role"].endswith(" as cleaner")
    assert suspect["audit"]["rows"] == 10

    w.sql(
        "CREATE FUNCTION keep_me() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$"
    )
    w.sql("CREATE TABLE mine (id int)")
    w.sql("CREATE TRIGGER pgdr_audit AFTER DELETE ON mine FOR EACH ROW EXECUTE FUNCTION keep_me()")
    removed = audit(w, "remove")
    assert removed["removed"] == ["items", "tags"] and not removed["trail_dropped"]
    assert pgdr_triggers(w) == [("mine", "pgdr_audit")]  # not pgdr's: left alone
    assert w.sql("SELECT count(*) FROM pgdr_audit")[0][0] == removed["trail_rows"] == 12
    assert audit(w, "remove", "--force")["trail_dropped"]
    after = audit(w, "show")
    assert not after["installed"] and "No audit trail" in after["notes"][0]
    w.stop_stream(stream)


LONG = "t_" + "é" * 40  # 82 bytes: PostgreSQL keeps the first 63, whole characters


def test_the_trail_names_tables_as_pgdr_does(pg18: Server, cli_env: dict[str, str]) -> None:
    """The trail stored `schema.name` bare: `"a.b".c` and `a."b.c"` were one `a.b.c`, and
    `audit show --table` showed the other table's entries. It now stores names as pgdr writes
    them; entries of an older install (bare) are still found, with a note when ambiguous."""
    url = pg18.new_database()
    env = cli_env | {"DATABASE_URL": url}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "a.b"; CREATE SCHEMA a')
        conn.execute('CREATE TABLE "a.b".c (id int PRIMARY KEY)')
        conn.execute('CREATE TABLE a."b.c" (id int PRIMARY KEY)')
        conn.execute("CREATE TABLE public.plain (id int PRIMARY KEY)")
        conn.execute(f"CREATE TABLE {LONG} (id int PRIMARY KEY)")  # PostgreSQL keeps 63 bytes
    for table in ('"a.b".c', 'a."b.c"', "plain", LONG):
        assert run_cli("audit", "install", "--tables", table, env=env).code == 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('INSERT INTO "a.b".c VALUES (1), (2); DELETE FROM "a.b".c')
        conn.execute('INSERT INTO a."b.c" VALUES (3); DELETE FROM a."b.c"')
        conn.execute("INSERT INTO plain VALUES (4); DELETE FROM plain")
        conn.execute(f"INSERT INTO {LONG} VALUES (5); DELETE FROM {LONG}")
        # as an older install recorded a deletion from "a.b".c: bare
        conn.execute(
            "INSERT INTO pgdr_audit (table_name, op, key) VALUES ('a.b.c', 'DELETE', '{\"id\": 9}')"
        )

    def show(table: str) -> dict[str, Any]:
        shown = run_cli("audit", "show", "--table", table, "--json", env=env)
        assert shown.code == 0, shown.stderr
        return dict(json.loads(shown.stdout))

    first = show('"a.b".c')
    assert sorted(e["key"]["id"] for e in first["entries"]) == [1, 2, 9]
    assert {e["table"] for e in first["entries"]} == {'"a.b".c', "a.b.c"}
    assert any("before pgdr quoted names" in n for n in first["notes"])
    second = show('a."b.c"')
    assert sorted(e["key"]["id"] for e in second["entries"]) == [3, 9]  # 9: bare, said so
    assert any("before pgdr quoted names" in n for n in second["notes"])
    plain = show("plain")
    assert [e["table"] for e in plain["entries"]] == ["public.plain"] and not plain["notes"]
    long = show(LONG)  # named as typed, found as PostgreSQL keeps it
    assert [e["key"]["id"] for e in long["entries"]] == [5]
