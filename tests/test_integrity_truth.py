"""Checks that tell the truth: never crash the server, never "OK" for a partial run.

Real clusters (PostgreSQL 18 and Debian's 15): a heap page damaged on disk of a cluster without
data checksums is found by pg_amcheck **before** pgdr reads any table, and never read; anything
not checked makes the run INCOMPLETE (exit 1), listed with its reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import Server, run_cli
from pgdr.cluster import LocalCluster, choose_installation, find_installations
from pgdr.config import PgdrSettings
from pgdr.integrity import CheckOptions, run_check
from pgdr.profile import load_profile

BLOCK = 8192
PROFILE = """name = "shop"
[[tables]]
name = "items"
[[tables]]
name = "notes"
[[tables]]
name = "tags"
"""


def _majors() -> list[int]:
    have = {i.major for i in find_installations()}
    return [m for m in (18, 15) if m in have]


@pytest.fixture(params=_majors(), ids=lambda m: f"pg{m}")
def heap_damaged(settings: PgdrSettings, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A checksums-off cluster whose table ``items`` has garbage over its first heap page."""
    major: int = request.param
    cluster = LocalCluster(settings.home / "clusters" / f"heapdmg{os.getpid()}_{major}", settings)
    cluster.create(choose_installation(None, major), checksums=False)
    try:
        cluster.start()
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
            conn.execute("INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 2000) g")
            conn.execute(
                "CREATE TABLE notes (id int PRIMARY KEY, item_id int REFERENCES items, t text)"
            )
            conn.execute("INSERT INTO notes SELECT g, g, 'x' FROM generate_series(1, 100) g")
            conn.execute("CREATE TABLE tags (id int PRIMARY KEY, name text)")
            conn.execute("INSERT INTO tags SELECT g, 't' FROM generate_series(1, 10) g")
            conn.execute("CHECKPOINT")
            row = conn.execute("SELECT pg_relation_filepath('items')").fetchone()
            assert row is not None
        cluster.stop()
        with (cluster.data_dir / str(row[0])).open("r+b") as handle:  # tuples of block 0
            handle.seek(BLOCK // 2)
            handle.write(b"\x7f" * (BLOCK // 2 - 16))
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        cluster.destroy()


def test_deep_never_reads_a_damaged_heap(
    heap_damaged: LocalCluster, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    profile = tmp_path / "shop.toml"
    profile.write_text(PROFILE)
    env = cli_env | {"DATABASE_URL": heap_damaged.conninfo()}
    result = run_cli("check", "--deep", "--profile", str(profile), "--json", env=env)
    assert result.code == 1, result.stderr
    data = json.loads(result.stdout)
    damaged = [f for f in data["findings"] if f["code"] == "amcheck"]
    assert damaged and all(f["priority"] == "P0" for f in damaged), data
    assert {f["table"] for f in damaged} == {"public.items"}
    off = [f for f in data["findings"] if f["code"] == "checksums_off"]
    assert off and "pg_checksums --enable" in off[0]["message"]
    assert any("installed the amcheck extension" in n for n in data["notes"])
    # the damaged table was never read, nor joined as a parent; the healthy ones were checked
    assert "public.items" not in {t["table"] for t in data["tables"]}
    assert {"public.notes", "public.tags"} <= {t["table"] for t in data["tables"]}
    reasons = " ".join(data["summary"]["not_checked"])
    assert "public.items was not read because pg_amcheck found it damaged" in reasons
    assert "its parent public.items is damaged" in reasons
    # the server is still up, and no backend died
    with psycopg.connect(heap_damaged.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT 1")
    log = heap_damaged.log_file.read_text(errors="replace")
    assert "database system is ready" in log
    assert "terminated by signal" not in log and "was terminated" not in log
    human = run_cli("check", "--deep", "--profile", str(profile), env=env)
    assert human.code == 1
    assert "public.items" in human.stdout


def test_checksums_off_is_a_finding_without_deep(
    heap_damaged: LocalCluster, tmp_path: Path
) -> None:
    profile = tmp_path / "shop.toml"
    profile.write_text('name = "tags"\n[[tables]]\nname = "tags"\n')
    report = run_check(heap_damaged.conninfo(), load_profile(str(profile)))
    off = [f for f in report.findings if f.code == "checksums_off"]
    assert off and off[0].severity == "warning"
    assert "offline" in off[0].message


def _sql(conninfo: str, *statements: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_two_dimensional_array_loses_nothing(pg15: Server) -> None:
    """One 2-D array no longer drops the table's other broken rows (array_position)."""
    db = pg15.new_database()
    _sql(
        db,
        "UPDATE embeddings SET embedding[7] = 'NaN' WHERE id IN (1, 2, 3, 4, 5)",
        "UPDATE embeddings SET embedding = ARRAY[[1, 2], [3, NULL]]::real[] WHERE id = 6",
    )
    report = run_check(db, load_profile("convoai"), CheckOptions(vectors=True))
    data = report.as_dict()
    codes = {(f["code"], f["name"]): f for f in data["findings"]}
    assert codes[("non_finite", "embeddings")]["count"] == 6  # five NaN + the NULL element
    assert codes[("wrong_dimension", "embeddings")]["samples"] == ["6"]
    assert data["summary"]["incomplete"] is False


def test_locked_table_makes_the_run_incomplete(db18: str, cli_env: dict[str, str]) -> None:
    env = cli_env | {"DATABASE_URL": db18}
    with psycopg.connect(db18) as migration:
        migration.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        result = run_cli("check", "--json", "--timeout", "2", env=env)
        human = run_cli("check", "--timeout", "2", env=env)
        migration.rollback()
    assert result.code == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "incomplete"
    assert data["summary"]["critical"] == 0
    assert any("public.messages is locked" in r for r in data["summary"]["not_checked"]), data[
        "summary"
    ]
    assert human.code == 1
    assert "INCOMPLETE" in human.stdout and "not a pass" in human.stderr
    assert "OK" not in human.stdout


def test_rule_that_could_not_run_makes_the_run_incomplete(db18: str, tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text(
        'name = "rules"\n[[tables]]\nname = "users"\n'
        '[[rules]]\nname = "typo"\ntable = "users"\nviolation = "emial IS NULL"\n'
    )
    report = run_check(db18, load_profile(str(profile)))
    assert report.status == "incomplete"
    assert any("typo" in r for r in report.as_dict()["summary"]["not_checked"])
