"""What a point-in-time restore recovers to, as the user named it (checked before any work)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pgdr.core.errors import ConfigError
from pgdr.core.time import user_moment
from pgdr.wal.names import parse_lsn


@dataclass(frozen=True)
class Target:
    """What to recover to: one of time, lsn, xid, name, or the end of the WAL (latest)."""

    kind: str
    value: str | None = None
    exclusive: bool = False  # stop just before the target (recovery_target_inclusive = false)

    @property
    def moment(self) -> datetime | None:
        return parse_target_time(self.value) if self.kind == "time" and self.value else None

    def describe(self) -> str:
        if self.kind == "latest":
            return "the latest WAL"
        return ("just before " if self.exclusive else "") + f"{self.kind} {self.value}"


def parse_target_time(text: str) -> datetime:
    """ISO 8601; a time without a zone is UTC."""
    return user_moment(text, "--target-time")


def make_target(
    time_: str | None,
    lsn: str | None,
    xid: str | None,
    name: str | None,
    latest: bool,
    exclusive: bool = False,
) -> Target | None:
    given: list[tuple[str, str | None]] = [
        (k, v)
        for k, v in (("time", time_), ("lsn", lsn), ("xid", xid), ("name", name))
        if v is not None
    ]
    if latest:
        given.append(("latest", None))
    if len(given) > 1:
        raise ConfigError("Give one recovery target: --target-time, -lsn, -xid, -name or --latest.")
    if not given:
        if exclusive:
            raise ConfigError("--exclusive goes with --target-xid, --target-time or --target-lsn.")
        return None
    kind, value = given[0]
    if exclusive and kind not in ("xid", "time", "lsn"):
        raise ConfigError("--exclusive goes with --target-xid, --target-time or --target-lsn.")
    if kind == "time" and value is not None:
        parse_target_time(value)
    if kind == "lsn" and value is not None:
        parse_lsn(value)
    if kind == "xid" and value is not None and not value.isdigit():
        raise ConfigError(f"--target-xid {value!r} is not a transaction id.")
    return Target(kind, value, exclusive)
