"""``pgdr export``: the profile's critical tables as CSV from one snapshot, with a manifest."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import psycopg

from conftest import Server, run_cli


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_export_to_directory_and_repository(
    server: Server, backup_env: dict[str, str], tmp_path: Path
) -> None:
    url = server.new_database()
    env = backup_env | {"DATABASE_URL": url}
    out = tmp_path / "export"
    made = run_cli("export", "--out", str(out), "--json", env=env)
    assert made.code == 0, made.stderr
    data = json.loads(made.stdout)
    assert set(data["tables"]) == {"public.users", "public.chatbots", "public.subscriptions"}
    for name, info in data["tables"].items():
        file = out / info["file"]
        assert hashlib.sha256(file.read_bytes()).hexdigest() == info["sha256"]
        with file.open(newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows[0][0] == "id"  # a header
        assert len(rows) - 1 == info["rows"] == count(url, name)
    assert json.loads((out / "export-manifest.json").read_text())["tables"] == data["tables"]
    again = run_cli("export", "--out", str(out), env=env)
    assert again.code == 2 and "--force" in again.stderr

    stored = run_cli("export", "--tables", "chatbots", "--json", env=env)
    assert stored.code == 0, stored.stderr
    export_id = json.loads(stored.stdout)["stored_as"]
    listed = json.loads(run_cli("dump", "list", "--json", env=env).stdout)["dumps"]
    assert [d["kind"] for d in listed if d["id"] == export_id] == ["export"]
    checked = run_cli("dump", "verify", export_id, "--json", env=env)
    assert checked.code == 0, checked.stdout + checked.stderr
    stored_bytes = b"".join(
        p.read_bytes() for p in (tmp_path / "repo" / "dumps" / export_id / "chunks").iterdir()
    )
    assert b"created_at" not in stored_bytes  # the CSV header is not readable at rest
    missing = run_cli("export", "--tables", "nope", "--out", str(tmp_path / "x"), env=env)
    assert missing.code == 2 and "does not exist" in missing.stderr


def test_an_export_is_never_taken_for_a_dump(pg18: Server, backup_env: dict[str, str]) -> None:
    """`latest` is the latest pg_dump (with rows, for restore-table); retention keeps each
    kind's own weekly series, so neither an export nor a schema dump displaces a dump."""
    env = backup_env | {"DATABASE_URL": pg18.new_database()}
    dump_id = json.loads(run_cli("dump", "--json", env=env).stdout)["id"]
    schema_id = json.loads(run_cli("dump", "--schema-only", "--json", env=env).stdout)["id"]
    stored = run_cli("export", "--tables", "chatbots", "--json", env=env)
    export_id = json.loads(stored.stdout)["stored_as"]

    back = run_cli("restore-table", "chatbots", "--from", "latest", "--as", "cb", "--json", env=env)
    assert back.code == 0, back.stderr
    assert json.loads(back.stdout)["dump_id"] == dump_id
    verified = run_cli("dump", "verify", "latest", "--json", env=env)
    assert verified.code == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["dump_id"] == schema_id
    refused = run_cli("restore-table", "chatbots", "--from", export_id, env=env)
    assert refused.code == 2 and "CSV export" in refused.stderr

    pruned = run_cli("dump", "prune", "--dry-run", "--json", env=env)
    assert pruned.code == 0, pruned.stderr
    plan = json.loads(pruned.stdout)
    assert plan["removed"] == []
    reasons = {d["backup_id"]: d["reasons"] for d in plan["backups"]}
    assert any(r.startswith("weekly snapshot") for r in reasons[dump_id])
    assert any(r.startswith("weekly snapshot") for r in reasons[export_id])
