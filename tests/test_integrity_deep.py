"""`pgdr check --deep`: pg_amcheck finds a B-tree page damaged on disk; checksum counters."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import run_cli
from pgdr.cluster import LocalCluster, choose_installation
from pgdr.config import PgdrSettings
from pgdr.integrity import CheckOptions, run_check
from pgdr.profile import load_profile

BLOCK = 8192


@pytest.fixture
def damaged(settings: PgdrSettings, request: pytest.FixtureRequest) -> Iterator[tuple[str, bool]]:
    """A private cluster whose B-tree index has garbage written over one leaf page's tuples."""
    checksums: bool = request.param
    cluster = LocalCluster(
        settings.home / "clusters" / f"damaged{os.getpid()}{int(checksums)}", settings
    )
    cluster.create(choose_installation(None, 18), checksums=checksums)
    try:
        cluster.start()
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE items (id int PRIMARY KEY, note text, created_at timestamptz)"
            )
            conn.execute(
                "INSERT INTO items SELECT g, 'n' || g, now() FROM generate_series(1, 5000) g"
            )
            conn.execute("CHECKPOINT")
            row = conn.execute("SELECT pg_relation_filepath('items_pkey')").fetchone()
            assert row is not None
        cluster.stop()
        index_file = cluster.data_dir / str(row[0])
        with index_file.open("r+b") as handle:  # block 1 is the first leaf page
            handle.seek(BLOCK + BLOCK // 2)
            handle.write(b"\x7f" * (BLOCK // 2 - 16))
        cluster.start()
        yield cluster.conninfo(), checksums
    finally:
        cluster.stop()
        cluster.destroy()


@pytest.mark.parametrize("damaged", [False, True], indirect=True, ids=["plain", "checksums"])
def test_deep_finds_damaged_index_page(
    damaged: tuple[str, bool], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    conninfo, checksums = damaged
    profile = tmp_path / "p.toml"
    profile.write_text('name = "items"\n[[tables]]\nname = "items"\n')
    spec = load_profile(str(profile))
    shallow = run_check(conninfo, spec, CheckOptions())
    assert not any(f.code == "amcheck" for f in shallow.findings)
    deep = run_check(conninfo, spec, CheckOptions(deep=True, vectors=True))
    amcheck = [f for f in deep.findings if f.code == "amcheck"]
    assert amcheck, deep.as_dict()
    assert any("items_pkey" in f.details["relation"] for f in amcheck)
    assert all(f.table == "public.items" and f.priority == "P0" for f in amcheck)
    assert all(f.severity == "critical" for f in amcheck)
    if checksums:
        # reading the damaged page failed its checksum, and the server counted it
        assert any(f.code == "checksum_failures" for f in deep.findings)
    else:
        assert any(f.code == "checksums_off" for f in deep.findings)
    result = run_cli(
        "check",
        "--deep",
        "--profile",
        str(profile),
        "--json",
        env=cli_env | {"DATABASE_URL": conninfo},
    )
    assert result.code == 1
    assert any(f["code"] == "amcheck" for f in json.loads(result.stdout)["findings"])


def test_deep_on_healthy_database(db18: str) -> None:
    report = run_check(db18, load_profile("convoai"), CheckOptions(deep=True))
    assert report.findings == []
    assert any("pg_amcheck found no corruption" in n for n in report.notes)
