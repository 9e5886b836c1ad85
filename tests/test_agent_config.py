"""The fleet configuration, schedules, `pgdr status` on an empty repository and the systemd unit.

No PostgreSQL server is needed here; the agent against real databases is in test_agent.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from conftest import run_cli
from pgdr.agent.jobs import server_log_tail
from pgdr.config.fleet import Schedule, parse_agent_config, parse_fleet
from pgdr.core.errors import ConfigError


def fleet_error(toml: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_fleet(toml)
    return info.value.message


def test_no_databases_table_is_the_single_default() -> None:
    fleet = parse_fleet({})
    assert list(fleet) == ["default"]
    db = fleet["default"]
    assert db.namespace == ""  # the repositories the other commands use
    assert db.primary_repository == "primary"


def test_declared_databases_get_a_namespace_and_schedules() -> None:
    fleet = parse_fleet(
        {
            "databases": {
                "orders": {
                    "url_env": "ORDERS_URL",
                    "repositories": ["primary", "offsite"],
                    "schedule": {"full": "0 3 * * 0", "incremental": "6h"},
                },
                "chat": {"url_file": "/etc/pgdr/chat.url"},
            }
        }
    )
    assert fleet["orders"].namespace == "databases/orders"
    assert fleet["orders"].secondary_repositories == ["offsite"]
    assert fleet["orders"].url({"ORDERS_URL": "postgresql:///orders"}) == "postgresql:///orders"
    assert fleet["orders"].schedules["incremental"] is not None
    assert fleet["orders"].schedules["incremental"].interval_s == 6 * 3600


def test_bad_input_is_one_sentence_naming_the_key() -> None:
    assert "databases.a.url is not allowed" in fleet_error(
        {"databases": {"a": {"url": "postgresql://u:secret@h/db"}}}
    )
    assert "databases.a.colour is not a known setting" in fleet_error(
        {"databases": {"a": {"url_env": "A", "colour": "red"}}}
    )
    message = fleet_error({"databases": {"a": {"url_env": "A", "schedule": {"full": "often"}}}})
    assert message.startswith("databases.a.schedule.full = 'often' is neither a cron expression")
    assert "databases.a.schedule.full" in fleet_error(
        {"databases": {"a": {"url_env": "A", "schedule": {"full": "61 * * * *"}}}}
    )
    assert "databases.a.repositories needs at least one" in fleet_error(
        {"databases": {"a": {"url_env": "A", "repositories": []}}}
    )
    assert "only one database may use the default target" in fleet_error(
        {"databases": {"a": {}, "b": {}}}
    )
    assert "same namespace" in fleet_error(
        {
            "databases": {
                "a": {"url_env": "A", "namespace": "x"},
                "b": {"url_env": "B", "namespace": "x"},
            }
        }
    )
    assert "not a usable name" in fleet_error({"databases": {"all": {"url_env": "A"}}})
    with pytest.raises(ConfigError, match=r"agent\.retry_base_s"):
        parse_agent_config({"agent": {"retry_base_s": 0}})


def test_url_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "db.url"
    secret.write_text("postgresql://u:pw@h/db\n")
    secret.chmod(0o644)
    db = parse_fleet({"databases": {"a": {"url_file": str(secret)}}})["a"]
    with pytest.raises(ConfigError, match=r"readable by others .*chmod 600"):
        db.url()
    secret.chmod(0o600)
    assert db.url() == "postgresql://u:pw@h/db"
    unset = parse_fleet({"databases": {"a": {"url_env": "PGDR_TEST_UNSET_URL"}}})["a"]
    with pytest.raises(ConfigError, match="PGDR_TEST_UNSET_URL, which is not set"):
        unset.url({})


def test_schedules_count_what_a_long_run_skips() -> None:
    every = Schedule("10s", "k")
    assert every.next_in_series(100, 100) == 110
    assert every.next_in_series(100, 125) == 130  # stays on the series
    assert every.occurrences_between(100, 125, anchor=100) == 2  # 110 and 120
    assert every.occurrences_between(103, 125, anchor=100) == 2
    assert every.occurrences_between(100, 109, anchor=100) == 0
    nightly = Schedule("0 3 * * *", "k")
    start = datetime(2026, 1, 1, 12, tzinfo=UTC).timestamp()
    assert nightly.next_after(start) == datetime(2026, 1, 2, 3, tzinfo=UTC).timestamp()
    assert nightly.occurrences_between(start, start + 3 * 86400, anchor=start) == 3
    assert nightly.period_s() == 86400


def test_agent_refuses_an_unparsable_schedule(tmp_path: Path, cli_env: dict[str, str]) -> None:
    config = tmp_path / "pgdr.toml"
    config.write_text('[databases.a]\nurl_env = "A"\n[databases.a.schedule]\nfull = "sometimes"\n')
    result = run_cli("agent", "--config", str(config), env=cli_env, timeout=60)
    assert result.code == 2, result.stderr
    assert "databases.a.schedule.full = 'sometimes'" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_is_never_read_from_the_current_directory(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    (tmp_path / "pgdr.toml").write_text('[databases.evil]\nurl_env = "X"\n')
    env = cli_env | {"PGDR_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "pgdr", "status", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(proc.stdout)
    assert list(report["databases"]) == ["default"]


def test_status_of_a_database_without_backups_is_unprotected(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    home = tmp_path / "home"
    config = tmp_path / "pgdr.toml"
    config.write_text(
        f'[repositories.primary]\nurl = "{tmp_path / "repo"}"\n'
        '[databases.shop]\nurl_env = "SHOP_URL"\n'
    )
    env = cli_env | {"PGDR_HOME": str(home)}
    result = run_cli("status", "--config", str(config), "--json", env=env, timeout=60)
    assert result.code == 2, result.stderr
    shop = json.loads(result.stdout)["databases"]["shop"]
    assert shop["state"] == "unprotected"
    assert shop["last_backup"] is None
    assert "There is no complete base backup." in shop["reasons"]
    nagios = run_cli("status", "--config", str(config), "--nagios", env=env, timeout=60)
    assert nagios.code == 2
    assert nagios.stdout.startswith("PGDR CRITICAL - shop unprotected")
    assert "|" in nagios.stdout
    # a read command creates nothing
    assert not home.exists()
    assert not (tmp_path / "repo").exists()
    unknown = run_cli("status", "--config", str(config), "--db", "nope", "--nagios", env=env)
    assert unknown.code == 3
    assert unknown.stdout.startswith("PGDR UNKNOWN - There is no database named 'nope'")


def test_systemd_unit(tmp_path: Path, cli_env: dict[str, str]) -> None:
    config = tmp_path / "pgdr.toml"
    config.write_text('[databases.shop]\nurl_env = "SHOP_URL"\n')
    dry = run_cli(
        "agent",
        "install",
        "--systemd",
        "--dry-run",
        "--config",
        str(config),
        "--db",
        "shop",
        env=cli_env,
    )
    assert dry.code == 0, dry.stderr
    for line in (
        "Restart=always",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "KillSignal=SIGTERM",
    ):
        assert line in dry.stdout
    assert f"agent --config {config} --db shop" in dry.stdout
    unit = tmp_path / "units" / "pgdr-agent.service"
    args = ("agent", "install", "--systemd", "--config", str(config), "--unit", str(unit))
    assert run_cli(*args, env=cli_env).code == 0
    assert unit.read_text() == dry.stdout.replace(" --db shop", "")
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    again = run_cli(*args, env=cli_env)
    assert again.code == 2 and "already exists; pass --force" in again.stderr
    assert run_cli(*args, "--force", env=cli_env).code == 0
    assert os.path.exists(unit)


def test_agent_serve_answers_and_stops_cleanly(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """`pgdr agent --serve` with a database that is down: the API answers, SIGTERM exits 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "pgdr.toml"
    config.write_text(
        f'[agent]\nconnect_retry_max_s = 1\n[repositories.primary]\nurl = "{tmp_path / "repo"}"\n'
        '[databases.x]\nurl_env = "X_URL"\n'
    )
    env = cli_env | {"PGDR_HOME": str(tmp_path / "home"), "X_URL": "postgresql://127.0.0.1:1/x"}
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgdr",
            "agent",
            "--config",
            str(config),
            "--serve",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        health = None
        deadline = time.monotonic() + 90
        while health is None and time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=3).json()
            except httpx.HTTPError:
                time.sleep(1)
        assert health is not None and health["healthy"] is False
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        text = (tmp_path / "agent.log").read_text()
        assert "The database is unreachable, retrying" in text
        assert "pgdr agent stopped cleanly" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_failed_restore_test_keeps_why_the_server_stopped(tmp_path: Path) -> None:
    """The throwaway cluster is removed; its log's cause and last lines stay in the record."""
    lines = [f"2026-12-01 04:00:{i:02d} UTC [9] LOG:  redo at 0/{i:X}000000" for i in range(40)]
    lines[20] = '2026-12-01 04:00:20 UTC [9] FATAL:  could not open file "pg_wal/x": No space'
    lines += ["2026-12-01 04:00:41 UTC [7] LOG:  startup process (PID 9) exited with exit code 1"]
    lines += ["2026-12-01 04:00:42 UTC [7] LOG:  database system is shut down"]
    (tmp_path / "server.log").write_text("\n".join(lines) + "\n")
    tail = server_log_tail(tmp_path)
    assert "FATAL:  could not open file" in tail
    assert tail.endswith("database system is shut down")
    assert "redo at 0/2000000" not in tail  # an ordinary line from the middle
    assert server_log_tail(tmp_path / "gone") == ""
