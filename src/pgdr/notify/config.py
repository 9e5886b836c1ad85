"""``[[contacts]]``, ``[escalation.P0..P3]`` and ``[notify]`` in pgdr.toml; ``PGDR_NOTIFY_WEBHOOK``.

A contact has a name, a role (the runbook's "DBA", "DevOps lead", "on-call") and channels written
``kind:target`` (``webhook:URL``, ``slack:URL``, ``email:ADDRESS``). An escalation level names
contacts by name or role: ``first`` are told at once, ``then`` after ``after_minutes`` without an
acknowledgement. A severity without an ``[escalation]`` table goes to every contact at once.
A channel whose target is malformed is kept (and fails loudly when used) so one bad address never
silences the others. The SMTP password comes from ``PGDR_SMTP_PASSWORD`` or a 0600 file.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from pgdr.config import PgdrSettings
from pgdr.config.settings import load_toml
from pgdr.core.errors import ConfigError
from pgdr.core.severity import Severity

CHANNEL_KINDS = ("webhook", "slack", "email")
ENV_WEBHOOK = "PGDR_NOTIFY_WEBHOOK"


@dataclass(frozen=True)
class Channel:
    kind: str
    target: str

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.target}"


@dataclass(frozen=True)
class Contact:
    name: str
    role: str
    channels: tuple[Channel, ...]


@dataclass(frozen=True)
class Escalation:
    first: tuple[str, ...] = ()
    then: tuple[str, ...] = ()
    after_minutes: float = 15.0


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "localhost"
    port: int = 25
    sender: str = "pgdr@localhost"
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NotifyConfig:
    contacts: tuple[Contact, ...] = ()
    escalation: dict[Severity, Escalation] = field(default_factory=dict)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    dashboard_url: str = "http://127.0.0.1:8080/"
    timeout_seconds: float = 5.0
    max_attempts: int = 20

    def who(self, names: tuple[str, ...]) -> list[Contact]:
        wanted = {n.lower() for n in names}
        return [c for c in self.contacts if c.name.lower() in wanted or c.role.lower() in wanted]

    def first_level(self, severity: Severity) -> list[Contact]:
        level = self.escalation.get(severity)
        chosen = self.who(level.first) if level else list(self.contacts)
        return chosen + [c for c in self.contacts if c.role == "env" and c not in chosen]

    def next_level(self, severity: Severity) -> tuple[list[Contact], float] | None:
        level = self.escalation.get(severity)
        if level is None or not level.then:
            return None
        return self.who(level.then), level.after_minutes * 60


class _ContactModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    role: str
    channels: list[str]


class _EscalationModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first: list[str] = []
    then: list[str] = []
    after_minutes: float = 15.0


class _SmtpModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "localhost"
    port: int = 25
    sender: str = "pgdr@localhost"
    starttls: bool = False
    username: str | None = None
    password_file: Path | None = None


class _NotifyModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dashboard_url: str = "http://127.0.0.1:8080/"
    timeout_seconds: float = 5.0
    max_attempts: int = 20
    smtp: _SmtpModel = _SmtpModel()


def parse_channel(text: str) -> Channel:
    kind, _, target = text.partition(":")
    if kind not in CHANNEL_KINDS or not target:
        raise ConfigError(
            f"The channel {text!r} is not one of webhook:URL, slack:URL, email:ADDRESS."
        )
    return Channel(kind, target)


def _password(model: _SmtpModel, environ: dict[str, str]) -> str | None:
    if environ.get("PGDR_SMTP_PASSWORD"):
        return environ["PGDR_SMTP_PASSWORD"]
    if model.password_file is None:
        return None
    path = model.password_file
    try:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            raise ConfigError(f"The SMTP password file {path} must have mode 0600.")
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"The SMTP password file {path} cannot be read: {exc.strerror}.") from exc


def _where(exc: ValidationError, table: str) -> str:
    first = exc.errors()[0]
    place = ".".join(str(p) for p in first["loc"])
    return f"[{table}] in pgdr.toml is invalid at {place}: {first['msg']}."


def from_table(table: dict[str, Any], environ: dict[str, str]) -> NotifyConfig:
    """Build the notification settings from a parsed pgdr.toml and the environment."""
    try:
        contacts = [_ContactModel(**c) for c in table.get("contacts", [])]
    except (ValidationError, TypeError) as exc:
        raise ConfigError(
            _where(exc, "contacts") if isinstance(exc, ValidationError) else str(exc)
        ) from exc
    try:
        levels = {
            Severity(k): _EscalationModel(**v) for k, v in table.get("escalation", {}).items()
        }
        notify = _NotifyModel(**table.get("notify", {}))
    except ValidationError as exc:
        raise ConfigError(_where(exc, "escalation/notify")) from exc
    except ValueError as exc:
        raise ConfigError(f"[escalation] keys must be P0, P1, P2 or P3: {exc}.") from exc
    built = [
        Contact(c.name, c.role, tuple(parse_channel(ch) for ch in c.channels)) for c in contacts
    ]
    if environ.get(ENV_WEBHOOK):
        built.append(Contact(ENV_WEBHOOK, "env", (Channel("webhook", environ[ENV_WEBHOOK]),)))
    smtp = notify.smtp
    return NotifyConfig(
        contacts=tuple(built),
        escalation={
            s: Escalation(tuple(e.first), tuple(e.then), e.after_minutes) for s, e in levels.items()
        },
        smtp=SmtpConfig(
            smtp.host,
            smtp.port,
            smtp.sender,
            smtp.starttls,
            smtp.username,
            _password(smtp, environ),
        ),
        dashboard_url=notify.dashboard_url,
        timeout_seconds=notify.timeout_seconds,
        max_attempts=notify.max_attempts,
    )


def load_notify_config(
    settings: PgdrSettings, environ: dict[str, str] | None = None
) -> NotifyConfig:
    table, _path = load_toml(settings)
    return from_table(table, dict(os.environ if environ is None else environ))
