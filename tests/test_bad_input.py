"""Bad input through the real CLI: one sentence, the documented exit code, never a traceback.

Covers issue 9's "Bad input" table: rich markup in user text (a backup label, a table name,
profile text, an error message), non-UTF-8 key and config files, out-of-range numbers in
settings, and psycopg errors of each kind (authentication failed, unreachable, read-only,
lock timeout, disk full, server closed the connection).
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from typer.main import get_command
from typer.testing import CliRunner

from conftest import Server, run_cli
from pgdr.cli.app import build_app
from pgdr.core.connect import translate
from pgdr.core.errors import RuntimeFailure

app = build_app()  # every command registered
MARKUP = "[/]"


def assert_one_sentence(stderr: str) -> str:
    """The failure is one ``error:`` line and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def _paths(command: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, sub in getattr(command, "commands", {}).items():
        paths.extend(_paths(sub, (*prefix, name)))
    return paths


def test_every_subcommand_help_without_traceback() -> None:
    runner = CliRunner()
    for path in _paths(get_command(app)):
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert result.exception is None and "Traceback" not in result.output, path


@pytest.mark.parametrize(
    ("files", "env", "args", "code", "fragment"),
    [
        ({"pgdr.toml": b"env = \xff\xfe\n"}, {}, ("pool", "show"), 2, "not UTF-8"),
        (
            {"key": b"\xff\xfe\x00binary"},
            {"PGDR_ENCRYPTION_KEY_FILE": "{dir}/key"},
            ("key", "show"),
            2,
            "not UTF-8",
        ),
        ({}, {"DB_CONNECTION_TIMEOUT": "99999999999999999999"}, ("pool", "show"), 2, "at most"),
        ({}, {"DB_POOL_MAX": "-1"}, ("pool", "show"), 2, "negative"),
        (
            {"pgdr.toml": b'[repositories.primary]\nurl = "{dir}/r"\nchunk_size_mb = 0.0000001\n'},
            {},
            ("backup", "list"),
            2,
            "chunk_size_mb",
        ),
        ({"p.toml": b"\xff"}, {}, ("profile", "show", "{dir}/p.toml"), 2, "UTF-8"),
        (
            {"p.toml": b'name = "x"\n"[/]" = 1\n'},
            {},
            ("profile", "show", "{dir}/p.toml"),
            2,
            MARKUP,
        ),
        ({}, {"PGDR_LOG_FORMAT": "[/]"}, ("version",), 2, MARKUP),
        ({}, {}, ("check", "--profile", "[bold]x[/]"), 2, "'[bold]x[/]'"),
        ({}, {}, ("--log-level", "[/]", "version"), 2, MARKUP),
        (
            {},
            {"DATABASE_URL": "postgresql://127.0.0.1:1/nowhere"},
            ("monitor", "report"),
            3,
            "Cannot connect",
        ),
    ],
)
def test_bad_input_is_one_sentence(
    cli_env: dict[str, str],
    tmp_path: Path,
    files: dict[str, bytes],
    env: dict[str, str],
    args: tuple[str, ...],
    code: int,
    fragment: str,
) -> None:
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content.replace(b"{dir}", str(tmp_path).encode()))
        path.chmod(0o600)
    run_env = cli_env | {k: v.replace("{dir}", str(tmp_path)) for k, v in env.items()}
    if "pgdr.toml" in files:
        run_env["PGDR_CONFIG"] = str(tmp_path / "pgdr.toml")
    result = run_cli(*(a.replace("{dir}", str(tmp_path)) for a in args), env=run_env)
    assert result.code == code, (result.stdout, result.stderr)
    assert fragment in assert_one_sentence(result.stderr)


def test_profile_text_with_markup_is_printed_as_is(cli_env: dict[str, str], tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text('name = "shop[/]"\ndescription = "[bold]not bold[/bold] [/]"\n')
    result = run_cli("profile", "show", str(profile), env=cli_env)
    assert result.code == 0, result.stderr
    assert "shop[/]: [bold]not bold[/bold] [/]" in result.stdout


def test_table_named_markup_in_monitor_report(db18: str, cli_env: dict[str, str]) -> None:
    with psycopg.connect(db18, autocommit=True) as conn:
        conn.execute('CREATE TABLE "[/]" (id int)')
        conn.execute('INSERT INTO "[/]" SELECT generate_series(1, 1000)')
    result = run_cli("monitor", "report", env=cli_env | {"DATABASE_URL": db18})
    assert result.code == 0, result.stderr
    assert "public.[/]" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_backup_label_with_markup_is_listed(pg18: Server, backup_env: dict[str, str]) -> None:
    env = backup_env | {"DATABASE_URL": pg18.new_database()}
    taken = run_cli("backup", "--label", "[/] [bold]x", "--json", env=env)
    assert taken.code == 0, taken.stderr
    listed = run_cli("backup", "list", env=env)
    assert listed.code == 0, listed.stderr
    assert "[/] [bold]x" in listed.stdout
    assert json.loads(run_cli("backup", "list", "--json", env=env).stdout)


def test_wrong_password_is_one_sentence(pg18: Server, cli_env: dict[str, str]) -> None:
    url = f"postgresql://postgres:wrong@127.0.0.1:{pg18.cluster.port}/postgres"
    result = run_cli("monitor", "report", env=cli_env | {"DATABASE_URL": url})
    assert result.code == 3
    line = assert_one_sentence(result.stderr)
    assert "password" in line and "wrong" not in line


def test_read_only_database_through_main(pg18: Server, cli_env: dict[str, str]) -> None:
    """A psycopg error no command anticipated is still one sentence (main translates it)."""
    url = pg18.new_database(template="template1")
    dbname = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(pg18.cluster.conninfo(), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
    result = run_cli("sample", "load", "--scale", "0.001", env=cli_env | {"DATABASE_URL": url})
    assert result.code == 3, result.stderr
    assert "read-only" in assert_one_sentence(result.stderr)


def test_lock_timeout_and_closed_connection_translate(pg18: Server) -> None:
    url = pg18.new_database(template="template1")
    with psycopg.connect(url, autocommit=True) as holder, psycopg.connect(url) as waiter:
        holder.execute("CREATE TABLE t (id int)")
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE t")
        waiter.execute("SET lock_timeout = '50ms'")
        with pytest.raises(psycopg.Error) as caught:
            waiter.execute("LOCK TABLE t")
        holder.execute("ROLLBACK")
    error = translate(caught.value)
    assert isinstance(error, RuntimeFailure) and "lock" in error.message
    with psycopg.connect(url, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as closed:
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        assert "shutting down" in translate(closed.value).message or "closed" in (
            translate(closed.value).message
        )
        with pytest.raises(psycopg.Error) as after:
            conn.execute("SELECT 1")
        assert "closed" in translate(after.value).message


def test_disk_full_translates() -> None:
    # A full disk cannot be produced safely on a shared machine; the SQLSTATE class is what
    # PostgreSQL sends (53100), so the translation is checked on psycopg's own error class.
    error = translate(pg_errors.DiskFull("could not extend file: No space left on device"))
    assert error.message.startswith("The database server's disk is full")
