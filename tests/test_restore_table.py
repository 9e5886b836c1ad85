"""``pgdr restore-table``: one table from a dump, beside the live one or in its place."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from conftest import Server, run_cli
from fixtures.wal import WalEnv
from pgdr.sample import VectorType, load_sample
from test_bad_input import assert_one_sentence
from test_pitr import backup, wait_streamed
from test_recover_rows import contents


def tables(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT oid::regclass::text FROM pg_class WHERE relkind = 'r'")
        return sorted(str(r[0]) for r in rows)


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
        kept = conn.execute("SELECT md5(string_agg(t::text, '' ORDER BY id)) FROM cb_old t")
        old_copy = kept.fetchone()
    damaged = contents(url)
    again = run_cli("restore-table", "chatbots", "--from", "latest", "--as", "cb_old", env=env)
    assert again.code == 2 and "--force" in assert_one_sentence(again.stderr)

    # the production table in place without --force: refused, nothing written
    unconfirmed = run_cli("restore-table", "chatbots", "--from", "latest", "--replace", env=env)
    assert unconfirmed.code == 2 and "--force" in assert_one_sentence(unconfirmed.stderr)
    assert contents(url) == damaged
    with psycopg.connect(url, autocommit=True) as conn:
        kept = conn.execute("SELECT md5(string_agg(t::text, '' ORDER BY id)) FROM cb_old t")
        assert kept.fetchone() == old_copy
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

    before, names = contents(url), tables(url)
    missing = run_cli("restore-table", "no_such_table", "--from", "latest", env=env)
    assert missing.code == 2 and "is not in dump" in assert_one_sentence(missing.stderr)
    assert (contents(url), tables(url)) == (before, names)
    other_url = pg18.new_database()
    other = contents(other_url), tables(other_url)
    wrong = run_cli(
        "restore-table", "chatbots", "--from", "latest", env=env | {"DATABASE_URL": other_url}
    )
    assert wrong.code == 2 and "not of this database" in assert_one_sentence(wrong.stderr)
    assert (contents(other_url), tables(other_url)) == other


def test_a_dump_of_another_cluster_is_refused(
    pg18: Server, pg15: Server, backup_env: dict[str, str]
) -> None:
    """Same database name, another database system: the system identifier tells them apart."""
    url = pg18.new_database()
    assert run_cli("dump", "--json", env=backup_env | {"DATABASE_URL": url}).code == 0
    name = str(conninfo_to_dict(url)["dbname"])
    with psycopg.connect(pg15.cluster.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg15.template}"')
    twin = pg15.cluster.conninfo(name)
    before = contents(twin), tables(twin)
    env = backup_env | {"DATABASE_URL": twin}
    for extra in ((), ("--replace", "--force")):
        wrong = run_cli("restore-table", "chatbots", "--from", "latest", *extra, env=env)
        assert wrong.code == 2, wrong.stdout + wrong.stderr
        assert "not of this database" in assert_one_sentence(wrong.stderr)
    assert (contents(twin), tables(twin)) == before


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


def test_dropped_table_from_backup_and_another_clusters_backup(
    walenv18: WalEnv, pg18: Server
) -> None:
    """A table dropped from the live database comes back from the backup's throwaway copy; a
    backup of another database system is refused before anything is restored."""
    w = walenv18
    load_sample(w.conninfo, scale=0.01)
    stream = w.start_stream()
    backup_id = backup(w)
    scratch = w.cluster.settings.home / "scratch"
    copies = set(scratch.iterdir()) if scratch.exists() else set()
    other_url = pg18.new_database()  # the same tables, another cluster
    other = contents(other_url), tables(other_url)
    for extra in ((), ("--at", "2999-01-01", "--replace", "--force")):
        wrong = run_cli(
            "restore-table", "chatbots", "--from-backup", backup_id, *extra,
            env=w.env | {"DATABASE_URL": other_url},
        )  # fmt: skip
        assert wrong.code == 2, wrong.stdout + wrong.stderr
        assert "database system" in assert_one_sentence(wrong.stderr)
    assert (contents(other_url), tables(other_url)) == other
    assert (set(scratch.iterdir()) if scratch.exists() else set()) == copies  # nothing restored
    good = contents(w.conninfo)
    w.sql("DROP TABLE knowledge_base")
    dropped = w.cli("restore-table", "knowledge_base", "--from-backup", backup_id, "--json")
    assert dropped.code == 0, dropped.stdout + dropped.stderr
    assert json.loads(dropped.stdout)["rows"] == good["knowledge_base"][0]
    assert contents(w.conninfo) == good
    assert not list((w.cluster.settings.home / "scratch").iterdir())
    w.stop_stream(stream)


def test_a_dotted_name_is_one_table_not_a_schema_and_a_table(
    pg18: Server, backup_env: dict[str, str], tmp_path: Path
) -> None:
    """Each command split table names its own way: `restore-table '"a.b"' --replace --force`
    restored the table b of schema a over its newer rows and left the damaged public."a.b"
    (exit 0), and `export --tables '"a.b"'` exported a.b. Now every command reads names as SQL
    writes them, in one place (pgdr.core.names)."""
    url = pg18.new_database()
    env = backup_env | {"DATABASE_URL": url}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE SCHEMA a; CREATE TABLE a.b (id int PRIMARY KEY, v text);"
            "INSERT INTO a.b VALUES (1, 'schema a');"
            'CREATE TABLE public."a.b" (id int PRIMARY KEY, v text);'
            """INSERT INTO public."a.b" VALUES (10, 'dotted');"""
            """CREATE TABLE public."My ""Odd"" Table" (id int PRIMARY KEY);"""
            """INSERT INTO public."My ""Odd"" Table" VALUES (7)"""
        )
    assert run_cli("dump", env=env).code == 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""UPDATE a.b SET v = 'changed since'; UPDATE "a.b" SET v = 'damaged'""")
    back = run_cli("restore-table", '"a.b"', "--from", "latest", "--replace", "--force", env=env)
    assert back.code == 0, back.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute('SELECT id, v FROM public."a.b"').fetchall() == [(10, "dotted")]
        assert conn.execute("SELECT id, v FROM a.b").fetchall() == [(1, "changed since")]

    out = tmp_path / "csv"
    names = ('public."a.b"', '"My ""Odd"" Table"')
    exported = run_cli(
        "export", *(x for n in names for x in ("--tables", n)), "--out", str(out), env=env
    )
    assert exported.code == 0, exported.stderr
    assert "dotted" in (out / 'public."a.b".csv').read_text()
    assert "7" in (out / 'public."My ""Odd"" Table".csv').read_text()
    before = contents(url)
    for bad in ("a.b.c", '"a.b', " ", '"".x', 'My "Odd" Table'):
        refused = run_cli("restore-table", bad, "--from", "latest", "--replace", "--force", env=env)
        assert refused.code == 2, (bad, refused.stderr)
        assert "is not a table name" in assert_one_sentence(refused.stderr), bad
    for blank in (" ", ""):  # exported nothing and said "Exported" (exit 0)
        refused = run_cli("export", "--tables", blank, "--out", str(tmp_path / "b"), env=env)
        assert refused.code == 2 and "is not a table name" in refused.stderr
    assert contents(url) == before


def test_names_that_join_alike_stay_apart(pg18: Server, backup_env: dict[str, str]) -> None:
    """A hostile review: schema "a.b" table c and schema a table "b.c" were one key, a.b.c, so
    `recover rows --table '"a.b".c'` put the row into a."b.c" (exit 0); `restore-table a`
    read the rows of table "a b" from the dump's list (names unquoted there) and replaced a's
    rows with them (exit 0); a default name beside a 55-byte table lost its date to
    PostgreSQL's 63-byte cut."""
    url = pg18.new_database()
    source = pg18.new_database()
    env = backup_env | {"DATABASE_URL": url, "SOURCE_URL": source}
    schema = (
        'CREATE SCHEMA "a.b"; CREATE SCHEMA a;'
        'CREATE TABLE "a.b".c (id int PRIMARY KEY, v text);'
        'CREATE TABLE a."b.c" (id int PRIMARY KEY, v text);'
        "CREATE TABLE public.a (id int PRIMARY KEY, v text);"
        'CREATE TABLE public."a b" (id int PRIMARY KEY, v text);'
        f"CREATE TABLE {'t' * 55} (id int PRIMARY KEY);"
    )
    for where in (url, source):
        with psycopg.connect(where, autocommit=True) as conn:
            conn.execute(schema)
            conn.execute(
                """INSERT INTO "a.b".c VALUES (1, 'dotted schema'), (2, 'dotted schema');"""
                """INSERT INTO a."b.c" VALUES (1, 'dotted table'), (2, 'dotted table');"""
                "INSERT INTO a VALUES (1, 'a'), (2, 'a');"
                """INSERT INTO "a b" VALUES (10, 'a b'), (11, 'a b'), (12, 'a b')"""
            )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('DELETE FROM "a.b".c; DELETE FROM a."b.c" WHERE id = 2')
    rows = run_cli(
        "recover", "rows", "--table", '"a.b".c', "--key", "1", "--key", "2",
        "--from-env", "SOURCE_URL", env=env,
    )  # fmt: skip
    assert rows.code == 0, rows.stdout + rows.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute('SELECT count(*) FROM "a.b".c').fetchone() == (2,)
        assert conn.execute('SELECT id FROM a."b.c"').fetchall() == [(1,)]

    assert run_cli("dump", env=env).code == 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE a SET v = 'damaged'")
    back = run_cli("restore-table", "a", "--from", "latest", "--replace", "--force", env=env)
    assert back.code == 0, back.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT id, v FROM a ORDER BY id").fetchall() == [(1, "a"), (2, "a")]
        assert conn.execute('SELECT count(*) FROM "a b"').fetchone() == (3,)
    spaced = run_cli("restore-table", '"a b"', "--from", "latest", "--json", env=env)
    assert spaced.code == 0, spaced.stderr
    beside = json.loads(spaced.stdout)["restored_as"]
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {beside}").fetchone() == (3,)

    long = run_cli("restore-table", "t" * 55, "--from", "latest", "--json", env=env)
    assert long.code == 0, long.stderr
    report = json.loads(long.stdout)
    made = report["restored_as"].split(".", 1)[1]
    assert made == "t" * 46 + "_" + report["dump_id"].split("-")[0].lower()
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass(%s) IS NOT NULL", (made,)).fetchone() == (True,)
