"""Settings: the runbook's pool variables, environment profiles, pgdr.toml, provenance, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from pgdr.cluster.target import resolve_target
from pgdr.config.pool_settings import POOL_PROFILES, resolve_pool_settings
from pgdr.config.settings import PgdrSettings
from pgdr.core.connect import redact
from pgdr.core.errors import ConfigError


def test_runbook_defaults() -> None:
    resolved = resolve_pool_settings({}, environ={})
    s = resolved.settings
    assert (s.max_size, s.min_size) == (20, 2)
    assert (s.connection_timeout_ms, s.idle_timeout_ms, s.max_lifetime_ms) == (
        10_000,
        30_000,
        1_800_000,
    )
    assert set(resolved.sources.values()) == {"runbook default"}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ("development", (5, 1, 5_000, 60_000, 300_000)),
        ("staging", (10, 2, 10_000, 30_000, 1_800_000)),
        ("production", (20, 5, 10_000, 30_000, 1_800_000)),
        ("high-traffic", (50, 10, 15_000, 20_000, 900_000)),
    ],
)
def test_runbook_environment_profiles(env: str, expected: tuple[int, ...]) -> None:
    s = resolve_pool_settings({}, environ={"PGDR_ENV": env}).settings
    got = (s.max_size, s.min_size, s.connection_timeout_ms, s.idle_timeout_ms, s.max_lifetime_ms)
    assert got == expected
    assert set(POOL_PROFILES) == {"development", "staging", "production", "high-traffic"}


def test_layers_and_provenance(tmp_path: Path) -> None:
    toml = {"env": "staging", "pool": {"max": 12, "idle_timeout": 40_000}}
    resolved = resolve_pool_settings(
        toml, environ={"DB_POOL_MAX": "15"}, toml_path=tmp_path / "pgdr.toml"
    )
    s = resolved.settings
    assert s.max_size == 15 and resolved.sources["max_size"] == "env DB_POOL_MAX"
    assert s.idle_timeout_ms == 40_000
    assert resolved.sources["idle_timeout_ms"] == f"file {tmp_path / 'pgdr.toml'}"
    assert s.min_size == 2 and resolved.sources["min_size"] == "profile staging"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DB_POOL_MAX": "lots"}, "DB_POOL_MAX must be a whole number"),
        ({"DB_POOL_MIN": "-1"}, "DB_POOL_MIN must not be negative"),
        ({"DB_POOL_MIN": "30"}, "DB_POOL_MIN (30) must not exceed DB_POOL_MAX (20)"),
        ({"DB_MAX_LIFETIME": "1000"}, "DB_MAX_LIFETIME (1000 ms) must not be shorter than"),
        ({"DB_CONNECTION_TIMEOUT": "10"}, "DB_CONNECTION_TIMEOUT must be at least 1000 ms"),
        ({"PGDR_ENV": "prod"}, "PGDR_ENV must be one of"),
        ({"DB_POOL_MAX": "0"}, "DB_POOL_MAX must be at least 1"),
    ],
)
def test_invalid_values_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_pool_settings({}, environ=environ)
    assert message in info.value.message


def test_pool_show_cli(cli_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "pgdr.toml").write_text('env = "production"\n[pool]\nmax = 30\n')
    env = cli_env | {"PGDR_CONFIG": str(tmp_path / "pgdr.toml"), "DB_IDLE_TIMEOUT": "25000"}
    result = run_cli("pool", "show", "--json", env=env)
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["environment"] == "production"
    assert data["settings"]["DB_POOL_MAX"] == {
        "value": 30,
        "source": f"file {tmp_path / 'pgdr.toml'}",
    }
    assert data["settings"]["DB_IDLE_TIMEOUT"]["source"] == "env DB_IDLE_TIMEOUT"
    assert data["settings"]["DB_POOL_MIN"] == {"value": 5, "source": "profile production"}
    human = run_cli("pool", "show", env=env)
    assert "DB_MAX_LIFETIME" in human.stdout and "profile production" in human.stdout


def test_invalid_setting_exits_2_with_one_sentence(cli_env: dict[str, str]) -> None:
    result = run_cli("pool", "show", env=cli_env | {"DB_POOL_MIN": "9", "DB_POOL_MAX": "3"})
    assert result.code == 2
    assert "DB_POOL_MIN (9) must not exceed DB_POOL_MAX (3)" in result.stderr
    assert "Traceback" not in result.stderr
    bad_toml = run_cli("pool", "show", env=cli_env | {"PGDR_CONFIG": "/nonexistent/pgdr.toml"})
    assert bad_toml.code == 2 and "PGDR_CONFIG" in bad_toml.stderr


def test_target_resolution_order(tmp_path: Path) -> None:
    settings = PgdrSettings(home=tmp_path)
    url = "postgresql://app:s3cret@db.example.com:5432/app"
    target = resolve_target(settings, environ={"DATABASE_URL": url, "PGHOST": "other"})
    assert target.source == "DATABASE_URL"
    assert "s3cret" not in target.redacted() and "***" in target.redacted()
    assert resolve_target(settings, environ={"PGHOST": "db"}).source == "PG* variables"
    with pytest.raises(ConfigError, match="DATABASE_URL is not a valid"):
        resolve_target(settings, environ={"DATABASE_URL": "not a conninfo"})
    assert redact("not a url ===") == "<unparseable connection string>"


def test_client_programs_get_the_password_through_the_environment() -> None:
    from pgdr.core.connect import client_environment

    conninfo, env = client_environment("postgresql://app:s3cret@db.example.com:5432/app")
    assert "s3cret" not in conninfo and "db.example.com" in conninfo
    assert env["PGPASSWORD"] == "s3cret"
    bare, env2 = client_environment("postgresql://app@db/app")
    assert "PGPASSWORD" not in env2 or env2["PGPASSWORD"] != "s3cret"
    assert "password" not in bare
