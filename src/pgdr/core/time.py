"""pgdr's one clock and one timestamp format: timezone-aware UTC, ISO 8601.

Every record and every JSON document pgdr writes states a moment as :func:`iso` text
(``2026-11-30T20:41:07.123456+00:00``). :func:`parse` reads that form back, and also the epoch
seconds older records hold, so a record written before this module existed still reads.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pgdr.core.errors import ConfigError


def now() -> datetime:
    """The current moment, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(moment: datetime | float | None = None) -> str:
    """``moment`` (default: now) as ISO 8601 UTC text."""
    return to_datetime(now() if moment is None else moment).isoformat()


def to_datetime(moment: datetime | float | str) -> datetime:
    """A datetime, epoch seconds or ISO text as an aware UTC datetime (naive means UTC)."""
    if isinstance(moment, datetime):
        value = moment
    elif isinstance(moment, int | float):
        value = datetime.fromtimestamp(float(moment), UTC)
    else:
        value = datetime.fromisoformat(moment)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse(text: str | float | None) -> datetime | None:
    """A stored timestamp (ISO text or epoch seconds) as aware UTC; None when absent or bad."""
    if text is None or text == "":
        return None
    try:
        return to_datetime(text)
    except (ValueError, OverflowError, OSError):
        return None


def epoch(moment: datetime | float | str) -> float:
    """Seconds since the epoch, for arithmetic on stored timestamps of either form."""
    return to_datetime(moment).timestamp()


def stamp(moment: datetime | None = None) -> str:
    """A sortable, filename-safe UTC stamp (``20261130T204107123456Z``) for record ids."""
    return (moment or now()).astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def utc_text(moment: datetime | float | str | None) -> str:
    """``2026-11-30 20:41:07 UTC`` for people (messages, reports); ``-`` when absent."""
    return "-" if moment is None else to_datetime(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def user_moment(text: str, option: str) -> datetime:
    """A moment typed for ``option`` (ISO 8601, a space allowed before the time; without a zone,
    UTC), or one sentence naming the option when it is not one."""
    try:
        moment = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not a time (use ISO 8601, e.g. 2026-11-25T09:30:00Z)."
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
