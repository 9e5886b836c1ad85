"""Any database, not only ConvoAI: a profile discovered from the catalog, `pgdr profile init`.

A schema pgdr does not ship (FK chains, a self-reference, a composite key, a table without a
primary key, a relation only the naming convention shows), on PostgreSQL 18 and 15.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import psycopg

from conftest import Server, run_cli
from pgdr.integrity import run_check
from pgdr.integrity.discover import profile_for

SCHEMA = (
    "CREATE TABLE customers (id int PRIMARY KEY, name text, created_at timestamptz)",
    "CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, "
    "inserted_at timestamptz)",
    "CREATE TABLE products (id bigint PRIMARY KEY, name text)",
    "CREATE TABLE order_items (order_id int REFERENCES orders, line_no int, "
    "product_id bigint REFERENCES products, PRIMARY KEY (order_id, line_no))",
    "CREATE TABLE shipments (id int PRIMARY KEY, order_id int, line_no int, "
    "FOREIGN KEY (order_id, line_no) REFERENCES order_items)",
    "CREATE TABLE employees (id int PRIMARY KEY, manager_id int REFERENCES employees)",
    "CREATE TABLE audit_log (event text, at timestamptz)",
    "CREATE TABLE invoice (id int PRIMARY KEY)",
    "CREATE TABLE invoice_line (id int PRIMARY KEY, invoice_id int, amount numeric)",
    "CREATE TABLE docs (id int PRIMARY KEY, content text, embedding real[])",
    "INSERT INTO customers SELECT g, 'c' || g, now() FROM generate_series(1, 20) g",
    "INSERT INTO orders SELECT g, 1 + g % 20, now() FROM generate_series(1, 50) g",
    "INSERT INTO products SELECT g, 'p' FROM generate_series(1, 5) g",
    "INSERT INTO order_items SELECT 1 + g % 50, g, 1 + g % 5 FROM generate_series(1, 100) g",
    "INSERT INTO shipments SELECT g, 1 + g % 50, g FROM generate_series(1, 100) g",
    "INSERT INTO employees VALUES (1, NULL), (2, 1), (3, 2)",
    "INSERT INTO audit_log VALUES ('boot', now())",
    "INSERT INTO invoice SELECT generate_series(1, 3)",
    "INSERT INTO invoice_line VALUES (1, 1, 10), (2, 3, 5)",
    "INSERT INTO docs SELECT g, 'd', ARRAY[0.1, 0.2, g]::real[] FROM generate_series(1, 10) g",
)


def _sql(conninfo: str, *statements: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_discovered_profile_of_a_foreign_schema(
    server: Server, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    db = server.new_database("template1")
    _sql(db, *SCHEMA)
    env = cli_env | {"DATABASE_URL": db}

    found = profile_for(db).profile
    assert found.name.startswith("discovered:")
    tables = {t.name: t for t in found.tables}
    assert set(tables) >= {"customers", "orders", "order_items", "audit_log", "employees"}
    assert tables["customers"].created_at == "created_at"
    assert tables["orders"].created_at == "inserted_at"
    assert tables["audit_log"].created_at == ""
    rels = {(r.child, tuple(r.child_columns), r.parent, r.severity) for r in found.relations}
    assert ("public.employees", ("manager_id",), "public.employees", "critical") in rels
    assert ("public.shipments", ("order_id", "line_no"), "public.order_items", "critical") in rels
    assert ("public.invoice_line", ("invoice_id",), "public.invoice", "warning") in rels
    [docs] = found.embeddings
    assert (docs.table, docs.vector, docs.dimension, docs.text) == (
        "public.docs",
        "embedding",
        3,
        "content",
    )

    # a clean database: no "table does not exist", nothing left unchecked
    clean = run_cli("check", "--json", env=env)
    assert clean.code == 0, clean.stdout + clean.stderr
    data = json.loads(clean.stdout)
    assert data["status"] == "ok" and data["findings"] == []
    assert any("discovered one from the catalog" in n for n in data["notes"])

    # written down before the migration that drops the foreign key
    out = tmp_path / "shop.toml"
    init = run_cli("profile", "init", "--out", str(out), env=env)
    assert init.code == 0, init.stderr
    assert tomllib.loads(out.read_text())["relations"]
    again = run_cli("profile", "init", "--out", str(out), env=env)
    assert again.code == 2 and "--force" in again.stderr

    _sql(
        db,
        "ALTER TABLE orders DROP CONSTRAINT orders_customer_id_fkey",
        "INSERT INTO orders VALUES (999, 12345, now())",  # an orphan
        "INSERT INTO invoice_line VALUES (3, 77, 1)",  # no FK ever: found by its name
    )
    saved = run_check(db, None).as_dict()
    by_name = {(f["table"], f["severity"]): f for f in saved["findings"] if f["code"] == "orphans"}
    # without the saved profile, the dropped FK is only a naming-convention guess: a warning
    assert by_name[("public.orders", "warning")]["samples"] == ["999"]
    assert by_name[("public.invoice_line", "warning")]["samples"] == ["3"]

    kept = run_cli("check", "--profile", str(out), "--json", env=env)
    assert kept.code == 1
    orphans = [f for f in json.loads(kept.stdout)["findings"] if f["code"] == "orphans"]
    critical = [f for f in orphans if f["severity"] == "critical"]
    assert [f["table"] for f in critical] == ["public.orders"]
    assert critical[0]["details"]["source"] == "profile"


def test_convoai_profile_applies_when_its_tables_exist(db18: str) -> None:
    assert profile_for(db18).profile.name == "convoai"
    report = run_check(db18, None)
    assert report.profile == "convoai"
    assert report.status == "ok", report.as_dict()
