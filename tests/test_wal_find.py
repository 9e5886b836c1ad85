"""``pgdr wal find``: the transaction that damaged a table, found in the archived WAL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from fixtures.wal import WalEnv
from test_bad_input import assert_one_sentence
from test_pitr import backup, wait_streamed


def in_one_transaction(w: WalEnv, *statements: str) -> int:
    """Run ``statements`` in one transaction; returns its xid."""
    with psycopg.connect(w.conninfo) as conn:
        for statement in statements:
            conn.execute(statement)
        row = conn.execute("SELECT txid_current()").fetchone()
        assert row is not None
        conn.commit()
    return int(row[0])


def find(w: WalEnv, *args: str) -> dict[str, Any]:
    result = w.cli("wal", "find", *args, "--json")
    assert result.code == 0, result.stdout + result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_the_mass_deletion_stands_out(walenv: WalEnv, tmp_path: Path) -> None:
    w = walenv
    # a temporary directory of this test's own: other tests (drills) run `wal find` meanwhile
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    w.env["TMPDIR"] = str(private_tmp)
    stream = w.start_stream()
    w.sql("CREATE TABLE items (id int PRIMARY KEY, note text)")
    w.sql("INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 300) g")
    backup(w)
    since = w.sql("SELECT now()")[0][0]
    one = in_one_transaction(w, "DELETE FROM items WHERE id = 1")
    updated = in_one_transaction(w, "UPDATE items SET note = 'x' WHERE id BETWEEN 2 AND 4")
    w.insert(20)  # other tables' work does not show up
    mass = in_one_transaction(w, "DELETE FROM items WHERE id > 150")
    in_one_transaction(w, "INSERT INTO items VALUES (1000, 'new')")
    wait_streamed(w)

    data = find(w, "--table", "items", "--since", since.isoformat())
    by_xid = {t["xid"]: t for t in data["transactions"]}
    assert set(by_xid) == {one, updated, mass, max(by_xid)}
    assert by_xid[mass]["rows"]["delete"] == 150 and by_xid[mass]["status"] == "committed"
    assert by_xid[one]["rows"]["delete"] == 1 and by_xid[updated]["rows"]["update"] == 3
    assert data["suspect"] == mass
    assert f"pgdr restore --target-xid {mass} --exclusive --new-cluster" in data["restore_commands"]
    assert by_xid[mass]["commit_time"] >= since.isoformat()[:19]

    updates = find(w, "--table", "items", "--op", "update")
    assert [t["xid"] for t in updates["transactions"]] == [updated]
    assert updates["suspect"] == updated
    assert not list(private_tmp.glob("pgdr-walfind-*"))  # the plaintext WAL is gone
    w.stop_stream(stream)


def test_truncate_is_followed_through_the_new_file(walenv: WalEnv) -> None:
    w = walenv
    stream = w.start_stream()
    w.sql("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    w.sql("INSERT INTO notes SELECT g, 'n' FROM generate_series(1, 50) g")
    backup(w)
    deleted = in_one_transaction(w, "DELETE FROM notes WHERE id <= 2")
    truncated = in_one_transaction(w, "TRUNCATE notes")
    w.sql("INSERT INTO notes VALUES (1, 'again')")
    wait_streamed(w)

    data = find(w, "--table", "notes")
    by_xid = {t["xid"]: t for t in data["transactions"]}
    assert by_xid[deleted]["rows"]["delete"] == 2  # in the table's file before the TRUNCATE
    assert by_xid[truncated]["truncate"] and "truncate" in by_xid[truncated]["ops"]
    assert data["suspect"] == truncated
    assert len(data["filenodes"]) == 2
    w.stop_stream(stream)


def test_bad_windows_and_tables_are_one_sentence(walenv18: WalEnv) -> None:
    w = walenv18
    stream = w.start_stream()
    w.insert(3)
    w.sql("SELECT pg_switch_wal()")
    w.insert(3)
    backup(w)
    wait_streamed(w)
    # WAL retention removed the oldest segment: the repository's WAL begins after it (the
    # streamer may have started after segment 1 was recycled already)
    (w.repo / "wal" / "00000001" / "000000010000000000000001").unlink(missing_ok=True)
    missing = w.cli("wal", "find", "--table", "nosuchtable")
    assert missing.code == 2 and "does not exist" in assert_one_sentence(missing.stderr)
    late = w.cli("wal", "find", "--table", "txlog", "--until", "2999-01-01T00:00:00Z")
    assert late.code == 1 and "not in the repository" in assert_one_sentence(late.stderr)
    early = w.cli("wal", "find", "--table", "txlog", "--since", "2000-01-01T00:00:00Z")
    assert early.code == 1 and "not in the repository" in assert_one_sentence(early.stderr)
    bad_op = w.cli("wal", "find", "--table", "txlog", "--op", "drop")
    assert bad_op.code == 2
    w.stop_stream(stream)


def test_the_table_is_named_with_its_schema_whatever_search_path_says(walenv18: WalEnv) -> None:
    """With search_path = app, public, `wal find --table app.items` reported the table as
    `items` (regclass text), and `undelete --at auto` read that as public.items: it put the
    rows back into public.items (exit 0), leaving app.items' rows deleted."""
    w = walenv18
    stream = w.start_stream()
    w.sql("CREATE SCHEMA app")
    for table in ("app.items", "public.items"):
        w.sql(f"CREATE TABLE {table} (id int PRIMARY KEY)")
        w.sql(f"INSERT INTO {table} SELECT generate_series(1, 5)")
    dbname = w.sql("SELECT current_database()")[0][0]
    w.sql(f'ALTER DATABASE "{dbname}" SET search_path = app, public')
    backup(w)
    since = w.sql("SELECT now()")[0][0]
    deleted = in_one_transaction(w, "DELETE FROM app.items WHERE id IN (1, 2)")
    wait_streamed(w)
    w.stop_stream(stream)
    data = find(w, "--table", "app.items", "--since", since.isoformat())
    assert data["table"] == "app.items" and data["suspect"] == deleted


def test_a_partitioned_table_is_read_through_its_partitions(walenv: WalEnv) -> None:
    """A partitioned table has no file of its own: `wal find --table events` said it "does not
    exist in the database now" (exit 2). Its partitions' files are read, each followed through
    a TRUNCATE; a row moved to another partition is an update, not a deletion; an unlogged
    partition, which no WAL holds, is named in the notes."""
    w = walenv
    stream = w.start_stream()
    w.sql(
        "CREATE TABLE events (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)"
    )
    w.sql("CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu')")
    w.sql("CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us')")
    w.sql("CREATE UNLOGGED TABLE events_tmp PARTITION OF events FOR VALUES IN ('tmp')")
    w.sql(
        "INSERT INTO events SELECT g, r FROM generate_series(1, 50) g, unnest('{eu,us}'::text[]) r"
    )
    backup(w)
    since = w.sql("SELECT now()")[0][0]
    mass = in_one_transaction(w, "DELETE FROM events WHERE id <= 15")
    moved = in_one_transaction(
        w, "UPDATE events SET region = 'us', id = id + 100 WHERE region = 'eu' AND id > 45"
    )
    truncated = in_one_transaction(w, "TRUNCATE events_us")
    wait_streamed(w)
    w.stop_stream(stream)

    data = find(w, "--table", "events", "--since", since.isoformat())
    by_xid = {t["xid"]: t for t in data["transactions"]}
    assert by_xid[mass]["rows"]["delete"] == 30  # 15 in each partition
    assert by_xid[moved]["rows"] == {"delete": 0, "update": 5, "insert": 5}
    assert by_xid[truncated]["truncate"] and data["suspect"] == truncated
    assert len(data["filenodes"]) == 4  # eu, us now, us before its TRUNCATE, tmp
    assert any("partitioned" in note and "detached" in note for note in data["notes"])
    assert any("Unlogged" in note and "events_tmp" in note for note in data["notes"])
    deletes = find(w, "--table", "events", "--op", "delete", "--since", since.isoformat())
    assert deletes["suspect"] == mass
    one = find(w, "--table", "events_eu", "--since", since.isoformat())
    assert {t["xid"]: t["rows"]["delete"] for t in one["transactions"]} == {mass: 15, moved: 0}
    unlogged = w.cli("wal", "find", "--table", "events_tmp")
    assert unlogged.code == 2 and "is unlogged" in assert_one_sentence(unlogged.stderr)
