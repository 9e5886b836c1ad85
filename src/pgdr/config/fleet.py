"""The databases pgdr protects: ``[databases.NAME]`` tables of ``pgdr.toml``, and their schedules.

Invariants:

* A database's connection string never sits in the file: ``url_env`` names an environment
  variable and ``url_file`` a file only its owner can read (mode 0600 or stricter); a literal
  ``url`` is refused. With neither, the database is the usual target (``DATABASE_URL``, ``PG*``
  or the embedded default).
* With no ``[databases]`` table (or no file at all) the fleet is the single database
  ``default``, whose repositories and records are exactly the ones the other commands use.
* A database declared in the file keeps its objects under ``databases/<name>/`` of each
  repository (``namespace``), so several databases and agents can share one bucket; the
  repository record inside that namespace binds it to one system identifier.
* Every schedule is validated when the file is read: a cron expression (five fields) or an
  interval (``30s``, ``15m``, ``6h``, ``7d``), or ``off``. An error is one sentence naming the key.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pgdr.config.settings import PgdrSettings, load_toml
from pgdr.core.errors import ConfigError
from pgdr.core.secrets import read_secret_file
from pgdr.core.time import iso

DEFAULT_DATABASE = "default"
ALL = "all"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
INTERVAL_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
OFF = "off"
MAX_SKIPPED_COUNT = 10_000  # occurrences counted when a job ran long; beyond this "many"


class Schedule:
    """A cron expression or a fixed interval; ``next_after`` gives the next occurrence."""

    def __init__(self, text: str, key: str) -> None:
        self.text = text.strip()
        self.key = key
        self.interval_s: float | None = None
        match = INTERVAL_PATTERN.match(self.text.lower())
        if match:
            self.interval_s = float(match.group(1)) * UNITS[match.group(2)]
            if self.interval_s <= 0:
                raise ConfigError(f"{key} must be longer than 0 s.")
        elif not croniter.is_valid(self.text) or len(self.text.split()) != 5:
            raise ConfigError(
                f"{key} = {self.text!r} is neither a cron expression (five fields, e.g. "
                "'0 3 * * *') nor an interval (e.g. 30s, 15m, 6h, 7d)."
            )

    def next_after(self, moment: float) -> float:
        """The first occurrence strictly after ``moment`` (epoch seconds)."""
        if self.interval_s is not None:
            return moment + self.interval_s
        start = datetime.fromtimestamp(moment, UTC)
        nxt: datetime = croniter(self.text, start).get_next(datetime)
        return nxt.timestamp()

    def occurrences_between(self, after: float, until: float, anchor: float) -> int:
        """How many occurrences fall in ``(after, until]``; an interval counts from ``anchor``."""
        if until <= after:
            return 0
        if self.interval_s is not None:
            step = self.interval_s
            count = int((until - anchor) // step) - int((after - anchor) // step)
            return max(0, min(MAX_SKIPPED_COUNT, count))
        count, moment = 0, self.next_after(after)
        while moment <= until and count < MAX_SKIPPED_COUNT:
            count += 1
            moment = self.next_after(moment)
        return count

    def next_in_series(self, anchor: float, moment: float) -> float:
        """The first occurrence after ``moment`` (an interval stays on ``anchor``'s series)."""
        if self.interval_s is None:
            return self.next_after(moment)
        step = self.interval_s
        return anchor + (int((moment - anchor) // step) + 1) * step

    def period_s(self) -> float:
        """The usual gap between occurrences (for "is the last run too old?")."""
        if self.interval_s is not None:
            return self.interval_s
        now = datetime.now(UTC).timestamp()
        first = self.next_after(now)
        return self.next_after(first) - first

    def __str__(self) -> str:
        return self.text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleConfig(_Strict):
    """When each job runs; ``off`` disables one."""

    full: str = "1d"
    incremental: str = OFF
    restore_test: str = "7d"
    uptime: str = "2m"
    drill: str = OFF  # "quarterly" follows the drill history (`pgdr drill schedule`)

    def parsed(self, prefix: str) -> dict[str, Schedule | None]:
        """Every job's schedule (None when off); ``drill = quarterly`` is handled by the agent."""
        out: dict[str, Schedule | None] = {}
        for job in ("full", "incremental", "restore_test", "uptime", "drill"):
            text = str(getattr(self, job)).strip()
            if text.lower() == OFF or (job == "drill" and text.lower() == "quarterly"):
                out[job] = None
                continue
            out[job] = Schedule(text, f"{prefix}.schedule.{job}")
        return out


class DatabaseConfig(_Strict):
    """One ``[databases.NAME]`` table."""

    url_env: str | None = None
    url_file: Path | None = None
    profile: str | None = None
    repositories: list[str] = Field(default_factory=lambda: ["primary"])
    namespace: str | None = None
    wal: bool = True
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)

    @field_validator("repositories")
    @classmethod
    def _some_repository(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one repository (the first is the primary tier)")
        if len(set(value)) != len(value):
            raise ValueError("names a repository twice")
        return value


class Database:
    """A configured database, resolved: its name, settings and parsed schedules."""

    def __init__(self, name: str, config: DatabaseConfig, declared: bool) -> None:
        self.name = name
        self.config = config
        self.declared = declared  # False for the implicit `default`
        prefix = f"databases.{name}"
        self.schedules = config.schedule.parsed(prefix)
        self.quarterly_drill = config.schedule.drill.strip().lower() == "quarterly"
        if config.namespace is not None:
            self.namespace = config.namespace.strip("/")
        else:
            self.namespace = f"databases/{name}" if declared else ""

    @property
    def primary_repository(self) -> str:
        return self.config.repositories[0]

    @property
    def secondary_repositories(self) -> list[str]:
        return self.config.repositories[1:]

    def url(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The connection string from ``url_env``/``url_file``; None means the usual target."""
        env = os.environ if environ is None else environ
        key = f"databases.{self.name}"
        if self.config.url_env is not None:
            value = env.get(self.config.url_env)
            if not value:
                raise ConfigError(f"{key}.url_env names {self.config.url_env}, which is not set.")
            return value
        if self.config.url_file is not None:
            return read_private_file(self.config.url_file, f"{key}.url_file")
        return None

    def records_dir(self, settings: PgdrSettings) -> Path:
        """Where this database's records live (``default`` keeps the historic place)."""
        base = settings.home / "records"
        return base if not self.declared else base / "databases" / self.name


def read_private_file(path: Path, key: str) -> str:
    """A secret from a file only its owner may read (a connection string may hold a password)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise ConfigError(f"{key} {path} cannot be read: {exc.strerror}.") from exc
    if mode & 0o077:
        raise ConfigError(f"{key} {path} is readable by others (mode {mode:o}); chmod 600 it.")
    return read_secret_file(path, key).strip()


def _sentence(name: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    key = f"databases.{name}" + (f".{loc}" if loc else "")
    if first["type"] == "extra_forbidden" and loc == "url":
        return (
            f"{key} is not allowed: a connection string may carry a password; "
            "use url_env (an environment variable) or url_file (a 0600 file)."
        )
    if first["type"] == "extra_forbidden":
        return f"{key} is not a known setting."
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{key} {message}."


class AgentConfig(_Strict):
    """The ``[agent]`` table: how patiently the agent retries."""

    retry_base_s: float = Field(30.0, gt=0)
    retry_max_s: float = Field(900.0, gt=0)
    connect_retry_max_s: float = Field(30.0, gt=0)
    stop_grace_s: float = Field(30.0, ge=0)
    drill_scenarios: list[str] | None = None  # the drill job's scenarios (default: all)


def parse_agent_config(toml: Mapping[str, Any]) -> AgentConfig:
    table = toml.get("agent", {})
    if not isinstance(table, dict):
        raise ConfigError("[agent] in pgdr.toml must be a table.")
    try:
        return AgentConfig.model_validate(table)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = "agent." + ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            raise ConfigError(f"{key} is not a known setting.") from exc
        raise ConfigError(f"{key} {first['msg'].removeprefix('Value error, ')}.") from exc


def load_agent_config(settings: PgdrSettings) -> AgentConfig:
    toml, _path = load_toml(settings)
    return parse_agent_config(toml)


def parse_fleet(toml: Mapping[str, Any]) -> dict[str, Database]:
    """Every database of a parsed ``pgdr.toml`` (the implicit ``default`` when none)."""
    tables = toml.get("databases")
    if tables is None:
        return {DEFAULT_DATABASE: Database(DEFAULT_DATABASE, DatabaseConfig(), declared=False)}
    if not isinstance(tables, dict) or not tables:
        raise ConfigError("[databases] in pgdr.toml must hold one table per database.")
    fleet: dict[str, Database] = {}
    for name, table in tables.items():
        if name == ALL or not NAME_PATTERN.match(name):
            raise ConfigError(
                f"databases.{name} is not a usable name (letters, digits, - and _; not 'all')."
            )
        if not isinstance(table, dict):
            raise ConfigError(f"databases.{name} must be a table.")
        try:
            config = DatabaseConfig.model_validate(table)
        except ValidationError as exc:
            raise ConfigError(_sentence(name, exc)) from exc
        fleet[name] = Database(name, config, declared=True)
    _check_sources(fleet)
    return fleet


def _check_sources(fleet: Mapping[str, Database]) -> None:
    """Two databases cannot share a namespace, nor (both) fall back to the usual target."""
    seen: dict[str, str] = {}
    for db in fleet.values():
        if db.config.url_env and db.config.url_file:
            raise ConfigError(f"databases.{db.name} gives both url_env and url_file; keep one.")
        where = db.namespace
        if where in seen:
            raise ConfigError(
                f"databases.{db.name} and databases.{seen[where]} use the same namespace "
                f"{where!r} in their repositories."
            )
        seen[where] = db.name
    implicit = [db.name for db in fleet.values() if not (db.config.url_env or db.config.url_file)]
    if len(implicit) > 1:
        raise ConfigError(
            f"databases.{implicit[1]} names no url_env or url_file; only one database may use "
            "the default target (DATABASE_URL, PG* or the embedded database)."
        )


def load_fleet(settings: PgdrSettings) -> dict[str, Database]:
    """The fleet from the ``pgdr.toml`` in force."""
    toml, _path = load_toml(settings)
    return parse_fleet(toml)


def select(fleet: Mapping[str, Database], name: str | None) -> list[Database]:
    """``--db NAME`` (or ``all``, or nothing: every database) as a list."""
    if name is None or name == ALL:
        return list(fleet.values())
    if name in fleet:
        return [fleet[name]]
    raise ConfigError(
        f"There is no database named {name!r}; configured: {', '.join(sorted(fleet))} "
        "(add a [databases.NAME] table to pgdr.toml)."
    )


def resolve_database(settings: PgdrSettings, name: str | None) -> Database:
    """One database for a command's ``--db NAME`` (default: the only one, or ``default``)."""
    fleet = load_fleet(settings)
    if name is None:
        if len(fleet) == 1:
            return next(iter(fleet.values()))
        if DEFAULT_DATABASE in fleet:
            return fleet[DEFAULT_DATABASE]
        raise ConfigError(
            f"Several databases are configured ({', '.join(sorted(fleet))}); choose one with --db."
        )
    if name == ALL:
        raise ConfigError("This command works on one database; give --db NAME.")
    return select(fleet, name)[0]


def when(moment: float | None) -> str | None:
    """An epoch time as ISO 8601 UTC; None stays None."""
    return None if moment is None else iso(moment)
