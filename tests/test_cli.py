"""The CLI as a whole: help everywhere, documented exit codes, JSON on reports."""

from __future__ import annotations

from typing import Any

import typer
from typer.main import get_command
from typer.testing import CliRunner

from conftest import run_cli
from pgdr.cli.app import build_app

app = build_app()  # every command registered


def _is_group(command: Any) -> bool:
    return hasattr(command, "commands")


def _command_paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    if _is_group(command):
        for name, sub in command.commands.items():
            paths.extend(_command_paths(sub, (*prefix, name)))
    return paths


def _all_paths() -> list[tuple[str, ...]]:
    return _command_paths(get_command(app))


def test_every_command_has_help() -> None:
    runner = CliRunner()
    paths = _all_paths()
    assert len(paths) > 10
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_every_report_offers_json() -> None:
    """Commands that print a report accept --json (action-only commands are listed)."""
    no_report = {
        ("version",),
        ("db", "url"),
        ("cluster", "url"),  # like db url: prints the URL itself
        ("db", "destroy"),
        ("demo",),
        ("serve",),
        ("agent", "install"),  # writes the unit file, or prints it with --dry-run
        ("wal", "stream"),
        ("wal", "fetch"),  # restore_command: its output is the segment file itself
    }
    runner = CliRunner()
    root = get_command(app)
    for path in _all_paths():
        command: Any = root
        for name in path:
            command = command.commands[name]
        if _is_group(command) or path in no_report or not path:
            continue
        result = runner.invoke(app, [*path, "--help"])
        assert "--json" in result.output, path


def test_usage_errors_exit_2(cli_env: dict[str, str]) -> None:
    result = run_cli("db", "start", "--port", "notaport", env=cli_env)
    assert result.code == 2
    result = run_cli("no-such-command", env=cli_env)
    assert result.code == 2


def test_version(cli_env: dict[str, str]) -> None:
    result = run_cli("version", env=cli_env)
    assert result.code == 0 and result.stdout.strip()


def test_typer_is_the_framework() -> None:
    assert isinstance(app, typer.Typer)
