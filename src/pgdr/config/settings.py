"""The ``PGDR_*`` environment variables and the optional ``pgdr.toml`` file.

``pgdr.toml`` is looked for at ``$PGDR_CONFIG`` (``--config FILE`` sets it), then
``$PGDR_HOME/pgdr.toml``, then ``/etc/pgdr/pgdr.toml``; never silently in the current directory
(a file there could redirect backups of a daemon started from it).
Environment variables always win over the file, so one file can serve several machines.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pgdr.core.errors import ConfigError

SYSTEM_HOME = Path("/var/lib/pgdr")
SYSTEM_CONFIG = Path("/etc/pgdr/pgdr.toml")


def default_home() -> Path:
    """Where pgdr keeps its clusters, keys and records when ``PGDR_HOME`` is not set.

    Root gets a system directory because server processes run as another user, who cannot
    enter root's 0700 home; everyone else gets their per-user data directory.
    """
    if os.geteuid() == 0:
        return SYSTEM_HOME
    return Path(platformdirs.user_data_dir("pgdr"))


class PgdrSettings(BaseSettings):
    """pgdr's own settings, read from ``PGDR_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="PGDR_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    env: str | None = None
    config: Path | None = None
    pg_bin: Path | None = None
    pg_version: int | None = None
    service_user: str = "postgres"
    profile: str = "convoai"
    repo: str | None = None


def load_settings() -> PgdrSettings:
    """Read the ``PGDR_*`` variables, turning validation errors into one sentence."""
    try:
        return PgdrSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "PGDR_" + str(first["loc"][0]).upper() if first["loc"] else "a PGDR_ variable"
        raise ConfigError(f"{name} is invalid: {first['msg']}.") from exc


def find_config_file(settings: PgdrSettings) -> Path | None:
    """The ``pgdr.toml`` in force, if any."""
    if settings.config is not None:
        if not settings.config.is_file():
            raise ConfigError(f"PGDR_CONFIG points to {settings.config}, which is not a file.")
        return settings.config
    for candidate in (settings.home / "pgdr.toml", SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def load_toml(settings: PgdrSettings) -> tuple[dict[str, Any], Path | None]:
    """The parsed ``pgdr.toml`` (empty when there is none) and where it came from."""
    path = find_config_file(settings)
    if path is None:
        return {}, None
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle), path
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not valid TOML: it is not UTF-8 text.") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror}.") from exc
