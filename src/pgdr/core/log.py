"""pgdr's logging: stdlib :mod:`logging`, configured once by the root command.

Every long-running piece (the WAL streamer, the monitor loop, drills, re-embedding, backups)
logs through ``logging.getLogger("pgdr.<package>")``; nothing prints progress notes itself.

Where the records go (:func:`configure`):
- stderr: a rich handler on a terminal; plain lines otherwise, or JSON lines when
  ``PGDR_LOG_FORMAT=json`` (one object per line: ``at`` ISO 8601 UTC, ``level``, ``logger``,
  ``message``, plus any ``extra`` fields);
- ``--log-file PATH``: the same records appended as plain (or JSON) lines, file mode 0600.

Invariants: a log line never carries a password (callers log redacted connection strings);
configuring twice replaces pgdr's handlers instead of duplicating them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from rich.logging import RichHandler

from pgdr.core.errors import ConfigError
from pgdr.core.output import err_console
from pgdr.core.time import iso

ROOT = "pgdr"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("auto", "plain", "json")
FORMAT_ENV = "PGDR_LOG_FORMAT"
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "at": iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info and record.exc_info[1] is not None:
            data["error"] = str(record.exc_info[1])
        return json.dumps(data, default=str, sort_keys=True)


class PlainFormatter(logging.Formatter):
    """``2026-11-30T20:41:07.123+00:00 INFO pgdr.wal: message``."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{iso(record.created)} {record.levelname} {record.name}: {record.getMessage()}"


def logger(name: str) -> logging.Logger:
    """The logger of a pgdr module (``pgdr.wal.stream`` → logs as ``pgdr.wal.stream``)."""
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


def _format_name(fmt: str | None) -> str:
    chosen = (fmt or os.environ.get(FORMAT_ENV) or "auto").lower()
    if chosen not in FORMATS:
        raise ConfigError(f"{FORMAT_ENV} must be one of {', '.join(FORMATS)}, not {chosen!r}.")
    return chosen


def _stderr_handler(fmt: str) -> logging.Handler:
    if fmt == "auto" and err_console.is_terminal:
        return RichHandler(
            console=err_console, show_path=False, markup=False, rich_tracebacks=False
        )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    return handler


def _file_handler(path: Path, fmt: str) -> logging.Handler:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot open the log file {path}: {exc.strerror or exc}.") from exc
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    return handler


def configure(level: str = "INFO", log_file: Path | None = None, fmt: str | None = None) -> None:
    """Route pgdr's log records to stderr (and ``log_file``) at ``level``."""
    name = level.upper()
    if name not in LEVELS:
        raise ConfigError(f"--log-level must be one of {', '.join(LEVELS)}, not {level!r}.")
    chosen = _format_name(fmt)
    root = logging.getLogger(ROOT)
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(_stderr_handler(chosen))
    if log_file is not None:
        root.addHandler(_file_handler(log_file, chosen))
    root.setLevel(name)
    root.propagate = False
