"""Configuration and command inputs that used to end in a traceback: each is one sentence and
exit 2 (usage or configuration), before anything is written.

The ``recover rows|tables`` cases run against real PostgreSQL 18: a table whose name needs
quoting (upper case, a space) is recovered, and a key that does not fit the key's type is one
sentence.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from conftest import CliResult, Server, run_cli


def _one_sentence(result: CliResult, *fragments: str) -> str:
    assert result.code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "error:" in message or "Invalid value" in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _with_toml(cli_env: dict[str, str], tmp_path: Path, text: bytes) -> dict[str, str]:
    path = tmp_path / "pgdr.toml"
    path.write_bytes(text)
    return cli_env | {"PGDR_CONFIG": str(path)}


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        (b"\x00\xff\xfe binary", "is not valid TOML"),
        (b'[repositories.primary]\nurl = "s3://bucket1/p"\nendpoint = 5\n', "endpoint 5"),
        (b'[repositories.primary]\nurl = "s3://Bad_Bucket!/p"\n', "not a valid S3 bucket"),
        (b'[repositories.primary]\nurl = "/tmp/r"\nchunk_size_mb = 0.001\n', "between 1 and 256"),
        (b'[repositories.primary]\nurl = "/tmp/r"\nchunk_size_mb = 257\n', "between 1 and 256"),
    ],
    ids=["binary", "endpoint-int", "bucket", "chunk-tiny", "chunk-huge"],
)
def test_bad_config_file_is_one_sentence(
    cli_env: dict[str, str], tmp_path: Path, toml: bytes, fragment: str
) -> None:
    env = _with_toml(cli_env, tmp_path, toml)
    _one_sentence(run_cli("backup", "list", env=env, timeout=60), fragment)


def test_garbage_endpoint_variable_is_one_sentence(cli_env: dict[str, str]) -> None:
    env = cli_env | {"PGDR_REPO": "s3://bucket1/p", "PGDR_S3_ENDPOINT": "garbage"}
    _one_sentence(run_cli("backup", "list", env=env, timeout=60), "PGDR_S3_ENDPOINT")


def test_bad_port_is_refused_before_restoring(backup_env: dict[str, str], scratch: Path) -> None:
    target = scratch / "never"
    result = run_cli(
        "restore", "latest", "--to", str(target), "--start", "--port", "99999", env=backup_env
    )
    _one_sentence(result, "--port", "65535")
    assert not target.exists() and not Path(backup_env["PGDR_REPO"]).exists()


SCHEMA = """
CREATE TABLE "My Table" (id int PRIMARY KEY, note text);
CREATE TABLE "Child Rows" (id int PRIMARY KEY, parent int REFERENCES "My Table"(id));
CREATE TABLE items (id uuid PRIMARY KEY, note text);
"""


def _db(server: Server) -> str:
    url = server.new_database("template1")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
    return url


def test_recover_quoted_names_and_bad_keys(pg18: Server, cli_env: dict[str, str]) -> None:
    source, target = _db(pg18), _db(pg18)
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("""INSERT INTO "My Table" VALUES (1, 'a'), (2, 'b')""")
        conn.execute("""INSERT INTO "Child Rows" VALUES (10, 1)""")
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("""INSERT INTO "My Table" VALUES (2, 'b')""")
    env = cli_env | {"DATABASE_URL": target, "SOURCE_URL": source}
    src = ("--from-env", "SOURCE_URL")

    rows = run_cli(
        "recover", "rows", "--table", "My Table", "--key", "1", "--with-children", *src, env=env
    )
    assert rows.code == 0, rows.stdout + rows.stderr
    tables = run_cli("recover", "tables", "--table", "My Table", *src, env=env)
    assert tables.code == 0, tables.stdout + tables.stderr
    with psycopg.connect(target) as conn:
        assert conn.execute('SELECT count(*) FROM "Child Rows"').fetchone() == (1,)
        assert conn.execute('SELECT count(*) FROM "My Table"').fetchone() == (2,)

    bad_key = run_cli("recover", "rows", "--table", "items", "--key", "not-a-uuid", *src, env=env)
    _one_sentence(bad_key, "--key value does not fit public.items.id", "uuid")
