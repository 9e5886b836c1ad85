"""What a hostile review of the commands that write into a live database found (restore-table,
recover rows, undelete, export), each a false "ok" before: now the truth or a refusal."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from conftest import CliResult, Server, run_cli


def q(url: str, query: str) -> list[tuple[Any, ...]] | None:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else None


def test_recover_rows_of_a_partitioned_table_brings_back_only_those_asked_for(
    pg18: Server, cli_env: dict[str, str]
) -> None:
    """Rows were remembered by ctid, which each partition numbers on its own: asked for row 1,
    `recover rows` brought back row 2 of another partition too ("inserted": 2, exit 0)."""
    source, target = pg18.new_database(), pg18.new_database()
    for url in (source, target):
        q(url, "CREATE TABLE ev (id int, region text, body text, PRIMARY KEY (id, region)) "
               "PARTITION BY LIST (region)")  # fmt: skip
        q(url, "CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu')")
        q(url, "CREATE TABLE ev_us PARTITION OF ev FOR VALUES IN ('us')")
        q(url, "INSERT INTO ev VALUES (1, 'eu', 'one'), (2, 'us', 'two')")
    q(target, "DELETE FROM ev")
    env = cli_env | {"DATABASE_URL": target, "SCRATCH_URL": source}
    args = ("--from-env", "SCRATCH_URL", "--table", "ev", "--key-column", "id", "--key", "1")
    result = run_cli("recover", "rows", *args, "--json", env=env)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["inserted"] == 1
    assert q(target, "SELECT id, region FROM ev") == [(1, "eu")]


def test_recover_rows_refuses_a_table_without_a_unique_key(
    pg18: Server, cli_env: dict[str, str]
) -> None:
    """Without a key, ON CONFLICT DO NOTHING kept nothing out: a row still present was
    inserted again (exit 0, "inserted": 1). Now refused, nothing changed."""
    source, target = pg18.new_database(), pg18.new_database()
    for url in (source, target):  # a unique column that may be NULL keeps nothing out either
        q(url, "CREATE TABLE notes (ref text, body text)")
        q(url, "INSERT INTO notes VALUES ('k1', 'hello'), ('k2', 'world')")
        q(url, "CREATE TABLE mails (ref text, email text UNIQUE)")
        q(url, "INSERT INTO mails VALUES ('k1', NULL), ('k2', NULL)")
    env = cli_env | {"DATABASE_URL": target, "SCRATCH_URL": source}
    for table in ("notes", "mails"):
        args = ("--from-env", "SCRATCH_URL", "--table", table, "--key-column", "ref", "--key", "k1")
        result = run_cli("recover", "rows", *args, env=env)
        assert result.code == 2, result.stderr
        assert "no primary key or unique constraint" in result.stderr
        assert q(target, f"SELECT count(*) FROM {table}") == [(2,)]


def test_recover_rows_says_a_table_missing_from_the_target_is_missing(
    pg18: Server, cli_env: dict[str, str]
) -> None:
    """A child table dropped from the target was refused as having "no primary key" (exit 2,
    a configuration error), which sends the operator after the wrong fix."""
    source, target = pg18.new_database(), pg18.new_database()
    for url in (source, target):
        q(url, "CREATE TABLE bots (id int PRIMARY KEY, name text)")
        q(url, "CREATE TABLE msgs (id int PRIMARY KEY, bot int REFERENCES bots, body text)")
        q(url, "INSERT INTO bots VALUES (1, 'one'); INSERT INTO msgs VALUES (10, 1, 'hi')")
    q(target, "DROP TABLE msgs; DELETE FROM bots")
    env = cli_env | {"DATABASE_URL": target, "SCRATCH_URL": source}
    args = ("--from-env", "SCRATCH_URL", "--table", "bots", "--key", "1", "--with-children")
    result = run_cli("recover", "rows", *args, env=env)
    assert result.code == 3, result.stderr
    assert "public.msgs is missing from the target" in result.stderr
    assert "primary key" not in result.stderr
    assert q(target, "SELECT count(*) FROM bots") == [(0,)]


def test_recover_rows_puts_an_inheritance_childs_rows_back_into_that_child(
    pg18: Server, cli_env: dict[str, str]
) -> None:
    """Rows of an inheritance child were inserted through the parent: they landed in the parent
    (gone from ``ONLY child``), and a row still present in the child was inserted a second
    time, since the parent's key does not cover its children ("inserted": 2, exit 0)."""
    source, target = pg18.new_database(), pg18.new_database()
    for url in (source, target):
        q(url, "CREATE TABLE ev (id int PRIMARY KEY, body text)")
        q(url, "CREATE TABLE ev_old (PRIMARY KEY (id)) INHERITS (ev)")
        q(
            url,
            "INSERT INTO ev_old VALUES (1, 'one'), (3, 'three'); INSERT INTO ev VALUES (2, 'two')",
        )
    q(target, "DELETE FROM ev_old WHERE id = 3")
    env = cli_env | {"DATABASE_URL": target, "SCRATCH_URL": source}
    keys = ("--key", "1", "--key", "3")
    result = run_cli("recover", "rows", "--from-env", "SCRATCH_URL", "--table", "ev", *keys,
                     "--json", env=env)  # fmt: skip
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["inserted"] == 1
    placed = q(target, "SELECT tableoid::regclass::text, id FROM ev ORDER BY id")
    assert placed == [("ev_old", 1), ("ev", 2), ("ev_old", 3)]


def test_recover_rows_accepts_keys_that_only_the_partitions_hold(
    pg18: Server, cli_env: dict[str, str]
) -> None:
    """A table partitioned by month with each partition's own primary key (the key lacks the
    partition column, so the parent cannot hold it) was refused as keyless, though each
    partition's key keeps out the rows routed to it."""
    source, target = pg18.new_database(), pg18.new_database()
    for url in (source, target):
        q(url, "CREATE TABLE m (id int, month int, body text) PARTITION BY LIST (month)")
        q(url, "CREATE TABLE m1 PARTITION OF m (PRIMARY KEY (id)) FOR VALUES IN (1)")
        q(url, "CREATE TABLE m2 PARTITION OF m (PRIMARY KEY (id)) FOR VALUES IN (2)")
        q(url, "INSERT INTO m VALUES (1, 1, 'a'), (2, 2, 'b')")
    q(target, "DELETE FROM m WHERE id = 1")
    env = cli_env | {"DATABASE_URL": target, "SCRATCH_URL": source}
    args = ("--table", "m", "--key-column", "id", "--key", "1", "--key", "2", "--json")
    result = run_cli("recover", "rows", "--from-env", "SCRATCH_URL", *args, env=env)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["inserted"] == 1
    assert q(target, "SELECT tableoid::regclass::text, id FROM m ORDER BY id") == [
        ("m1", 1),
        ("m2", 2),
    ]
    q(target, "CREATE TABLE n (id int, month int) PARTITION BY LIST (month)")  # one keyless
    q(target, "CREATE TABLE n1 PARTITION OF n (PRIMARY KEY (id)) FOR VALUES IN (1)")
    q(target, "CREATE TABLE n2 PARTITION OF n FOR VALUES IN (2)")
    q(source, "CREATE TABLE n (id int, month int); INSERT INTO n VALUES (5, 2)")
    refused = run_cli("recover", "rows", "--from-env", "SCRATCH_URL", "--table", "n",
                      "--key-column", "id", "--key", "5", env=env)  # fmt: skip
    assert refused.code == 2, refused.stderr
    assert "no primary key or unique constraint" in refused.stderr


def test_recover_tables_repairs_a_parent_without_copying_its_inheritance_children_into_it(
    pg18: Server, cli_env: dict[str, str]
) -> None:
    """`recover tables` streamed a parent with its inheritance children's rows and upserted them
    all into the parent: every row of the child was copied into the parent (exit 0)."""
    source, target = pg18.new_database(), pg18.new_database()
    for url in (source, target):
        q(url, "CREATE TABLE ev (id int PRIMARY KEY, body text)")
        q(url, "CREATE TABLE ev_old (PRIMARY KEY (id)) INHERITS (ev)")
        q(url, "INSERT INTO ev_old VALUES (1, 'one'); INSERT INTO ev VALUES (2, 'two')")
        q(
            url,
            "CREATE TABLE m (id int, month int, PRIMARY KEY (id, month)) PARTITION BY LIST (month)",
        )
        q(url, "CREATE TABLE m1 PARTITION OF m FOR VALUES IN (1)")
        q(url, "INSERT INTO m VALUES (1, 1)")
    q(target, "UPDATE ONLY ev SET body = 'damaged'; DELETE FROM m")
    env = cli_env | {"DATABASE_URL": target, "SCRATCH_URL": source}
    result = run_cli("recover", "tables", "--from-env", "SCRATCH_URL", "--table", "ev",
                     "--table", "m", "--json", env=env)  # fmt: skip
    assert result.code == 0, result.stderr
    placed = q(target, "SELECT tableoid::regclass::text, id, body FROM ev ORDER BY id")
    assert placed == [("ev_old", 1, "one"), ("ev", 2, "two")]
    assert q(target, "SELECT tableoid::regclass::text, id FROM m") == [("m1", 1)]


def _dump_then(url: str, env: dict[str, str], *changes: str) -> None:
    assert run_cli("dump", env=env).code == 0
    for change in changes:
        q(url, change)


def test_restore_table_reads_column_names_that_hold_commas_and_brackets(
    pg18: Server, backup_env: dict[str, str]
) -> None:
    """The COPY line's column list was split at every comma and the first bracket: a column
    "last, first" shifted every value after it into the wrong column, and a table "t(x)"
    lost its ids to the sequence, each with exit 0."""
    url = pg18.new_database()
    env = backup_env | {"DATABASE_URL": url}
    q(url, 'CREATE TABLE tc (id int PRIMARY KEY, "last, first" text, note text, extra text)')
    q(url, "INSERT INTO tc VALUES (1, 'x', 'n1', 'e1'), (2, 'y', 'n2', 'e2')")
    quoted = '"a ""b"""'  # the column a "b"
    q(url, 'CREATE TABLE "t(x)" (id serial PRIMARY KEY, ' + quoted + " text)")
    q(url, 'INSERT INTO "t(x)" (' + quoted + ") VALUES ('a'), ('b')")
    _dump_then(url, env, "ALTER TABLE tc DROP COLUMN extra", "UPDATE tc SET note = 'damaged'",
               'UPDATE "t(x)" SET ' + quoted + " = 'damaged'")  # fmt: skip
    for table in ("tc", "t(x)"):
        result = run_cli("restore-table", table, "--from", "latest", "--replace", "--force",
                         env=env)  # fmt: skip
        assert result.code == 0, result.stderr
    assert q(url, "SELECT * FROM tc ORDER BY id") == [(1, "x", "n1"), (2, "y", "n2")]
    assert q(url, 'SELECT * FROM "t(x)" ORDER BY id') == [(1, "a"), (2, "b")]


def test_restore_table_replace_waits_for_writers_and_checks_what_the_table_holds(
    pg18: Server, backup_env: dict[str, str]
) -> None:
    """--replace took no lock: a row another session committed meanwhile stayed, and a soft
    delete trigger kept a row, both reported as "now holds the rows of dump" (exit 0)."""
    url = pg18.new_database()
    env = backup_env | {"DATABASE_URL": url}
    q(url, "CREATE TABLE cc (id int PRIMARY KEY, v text)")
    q(url, "INSERT INTO cc VALUES (1, 'a'), (2, 'b')")
    _dump_then(url, env)
    writer = psycopg.connect(url)
    writer.execute("INSERT INTO cc VALUES (99, 'concurrent')")  # uncommitted: holds its lock
    done: list[CliResult] = []
    args = ("restore-table", "cc", "--from", "latest", "--replace", "--force")
    replace = threading.Thread(target=lambda: done.append(run_cli(*args, env=env)))
    replace.start()
    time.sleep(3)
    writer.commit()
    writer.close()
    replace.join()
    assert done[0].code == 0, done[0].stderr
    assert q(url, "SELECT * FROM cc ORDER BY id") == [(1, "a"), (2, "b")]

    q(url, "CREATE TABLE sd (id int PRIMARY KEY, v text, deleted bool DEFAULT false)")
    q(url, "INSERT INTO sd VALUES (1, 'a'), (2, 'b')")
    _dump_then(url, env, "INSERT INTO sd VALUES (3, 'later')",
               "CREATE FUNCTION soft() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
               "UPDATE sd SET deleted = true WHERE id = OLD.id; RETURN NULL; END $$",
               "CREATE TRIGGER soft BEFORE DELETE ON sd FOR EACH ROW EXECUTE FUNCTION soft()")  # fmt: skip
    result = run_cli("restore-table", "sd", "--from", "latest", "--replace", "--force", env=env)
    assert result.code == 3, result.stderr
    assert "rolled back" in result.stderr and "still differs from the dump" in result.stderr
    assert q(url, "SELECT id, deleted FROM sd ORDER BY id") == [(1, False), (2, False), (3, False)]


def test_export_is_whole_or_nothing(
    pg18: Server, backup_env: dict[str, str], tmp_path: Path
) -> None:
    """A role that row-level security lets see 2 rows of 3 exported 2 and said so (exit 0);
    a missing table failed the export ("nothing was exported") after the files of the
    tables before it were written."""
    url = pg18.new_database()
    env = backup_env | {"DATABASE_URL": url}
    q(
        url,
        "DO $$ BEGIN CREATE ROLE reader LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    )
    q(url, "CREATE TABLE tenant_rows (id int PRIMARY KEY, tenant text)")
    q(url, "INSERT INTO tenant_rows VALUES (1, 'a'), (2, 'b'), (3, 'a')")
    q(url, "GRANT SELECT ON tenant_rows TO reader")
    q(url, "ALTER TABLE tenant_rows ENABLE ROW LEVEL SECURITY")
    q(url, "CREATE POLICY p ON tenant_rows USING (tenant = 'a')")
    reader = env | {"DATABASE_URL": make_conninfo(url, user="reader")}
    hidden = run_cli("export", "--tables", "tenant_rows", "--out", str(tmp_path / "a"), env=reader)
    assert hidden.code == 3, hidden.stderr
    assert "row-level security" in hidden.stderr
    missing = run_cli("export", "--tables", "tenant_rows", "--tables", "nope", "--out",
                      str(tmp_path / "b"), env=env)  # fmt: skip
    assert missing.code == 2, missing.stderr
    for out in (tmp_path / "a", tmp_path / "b"):
        assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())
    whole = run_cli("export", "--tables", "tenant_rows", "--out", str(tmp_path / "c"), env=env)
    assert whole.code == 0, whole.stderr
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "export-manifest.json",
        "public.tenant_rows.csv",
    ]


def test_a_failed_pg_restore_says_what_went_wrong(pg18: Server, backup_env: dict[str, str]) -> None:
    """A dropped table restored into a read-only database fails safely; the sentence said only
    ``);`` (the last line of the command pg_restore echoes), now the error itself."""
    url = pg18.new_database()
    env = backup_env | {"DATABASE_URL": url}
    q(url, "CREATE TABLE gone (id int PRIMARY KEY, v text)")
    q(url, "INSERT INTO gone VALUES (1, 'a')")
    _dump_then(url, env, "DROP TABLE gone")
    database = (q(url, "SELECT current_database()") or [("",)])[0][0]
    q(url, f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    result = run_cli("restore-table", "gone", "--from", "latest", "--as", "gone_back", env=env)
    assert result.code == 3, result.stderr
    assert "read-only transaction" in result.stderr, result.stderr
    assert q(url, "SELECT to_regclass('gone'), to_regclass('gone_back')") == [(None, None)]


def test_restore_table_replace_compares_every_digit_and_restores_the_key_as_dumped(
    pg18: Server, backup_env: dict[str, str]
) -> None:
    """With ``extra_float_digits = 0`` (a database setting), 0.30000000000000004 read as 0.3
    like the dump's 0.3: left as it was, reported restored (exit 0). A key equal to the dump's
    but written differently (1.00 for 1.0) was never updated, and the check refused it."""
    url = pg18.new_database()
    env = backup_env | {"DATABASE_URL": url}
    database = (q(url, "SELECT current_database()") or [("",)])[0][0]
    q(url, "CREATE TABLE fl (id numeric PRIMARY KEY, f float8)")
    q(url, "INSERT INTO fl VALUES (1.0, 0.3)")
    _dump_then(url, env, "UPDATE fl SET f = 0.1::float8 + 0.2::float8, id = 1.00",
               f'ALTER DATABASE "{database}" SET extra_float_digits = 0')  # fmt: skip
    result = run_cli("restore-table", "fl", "--from", "latest", "--replace", "--force", env=env)
    assert result.code == 0, result.stderr
    assert q(url, "SELECT id::text, f = 0.3 FROM fl") == [("1.0", True)]


def test_restore_table_replace_leaves_the_inheritance_children_alone(
    pg18: Server, backup_env: dict[str, str]
) -> None:
    """The dump holds a parent's own rows (a child's are the child's); --replace deleted from
    the parent with its children, so every child row was gone, and the check after it read
    the children too and found the table equal to the dump (exit 0)."""
    url = pg18.new_database()
    env = backup_env | {"DATABASE_URL": url}
    q(url, "CREATE TABLE ev (id int PRIMARY KEY, body text)")
    q(url, "CREATE TABLE ev_old (PRIMARY KEY (id)) INHERITS (ev)")
    q(url, "INSERT INTO ev_old VALUES (1, 'one'); INSERT INTO ev VALUES (2, 'two')")
    _dump_then(url, env, "UPDATE ONLY ev SET body = 'damaged'")
    result = run_cli("restore-table", "ev", "--from", "latest", "--replace", "--force", env=env)
    assert result.code == 0, result.stderr
    placed = q(url, "SELECT tableoid::regclass::text, id, body FROM ev ORDER BY id")
    assert placed == [("ev_old", 1, "one"), ("ev", 2, "two")]


def test_restore_table_replace_does_not_wait_forever_for_the_table(
    pg18: Server, backup_env: dict[str, str]
) -> None:
    """A session idle in a transaction that locked a row (a child's foreign key check does)
    holds the table: the replace gives up after 30 s, rolled back, instead of waiting forever
    with every writer queued behind it."""
    url = pg18.new_database()
    env = backup_env | {"DATABASE_URL": url}
    q(url, "CREATE TABLE p (id int PRIMARY KEY, v text)")
    q(url, "INSERT INTO p VALUES (1, 'a')")
    _dump_then(url, env, "UPDATE p SET v = 'damaged'")
    with psycopg.connect(url) as idle:
        idle.execute("SELECT * FROM p FOR SHARE")
        result = run_cli("restore-table", "p", "--from", "latest", "--replace", "--force", env=env)
    assert result.code == 3, result.stderr
    assert "lock timeout" in result.stderr and "rolled back" in result.stderr
    assert q(url, "SELECT v FROM p") == [("damaged",)]
