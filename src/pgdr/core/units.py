"""Durations and sizes as people type and read them.

``parse_duration("2m")`` is 120 s; a duration must be a finite number of seconds above 0 and at
most a year, so a typo never becomes a timeout that overflows a clock. ``human_size`` prints
bytes in decimal units (``1.5 MB``).
"""

from __future__ import annotations

import math

from pgdr.core.errors import ConfigError

DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION_S = 366 * 86400.0


def parse_duration(text: str, option: str) -> float:
    """``30``, ``30s``, ``2m``, ``1h`` or ``1d`` in seconds; ``option`` names it in errors."""
    value = text.strip().lower()
    factor = DURATION_UNITS.get(value[-1:], 1.0) if value else 1.0
    number = value[:-1] if value[-1:] in DURATION_UNITS else value
    try:
        seconds = float(number) * factor
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a duration (e.g. 30s, 2m).") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{option} must be longer than 0 s.")
    if seconds > MAX_DURATION_S:
        raise ConfigError(f"{option} must be at most a year, not {text!r}.")
    return seconds


def human_size(n: float) -> str:
    """``n`` bytes in decimal units: ``512 B``, ``1.5 MB``."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} TB"
