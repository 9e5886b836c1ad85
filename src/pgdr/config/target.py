"""Which database a command works on.

``DATABASE_URL`` first, then the libpq ``PG*`` variables (``PGHOST``, ``PGSERVICE``, ...), then
the embedded default cluster under ``PGDR_HOME`` (resolved by ``pgdr.cluster.resolve_target``,
which owns clusters). Passwords stay in the URL or in libpq's own
files; pgdr never prints them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgdr.core.connect import hosts, redact
from pgdr.core.errors import ConfigError

LIBPQ_SELECTORS = ("PGHOST", "PGHOSTADDR", "PGSERVICE", "PGPORT", "PGDATABASE")


@dataclass(frozen=True)
class Target:
    """A database to work on: its connection string and where that came from."""

    conninfo: str
    source: str

    @property
    def is_embedded(self) -> bool:
        return self.source == "embedded"

    def redacted(self) -> str:
        """The connection string with any password removed, safe to print or log."""
        return redact(self.conninfo)


def configured_target(
    url: str | None = None, environ: Mapping[str, str] | None = None
) -> Target | None:
    """The database the settings name (``url``, ``DATABASE_URL``, ``PG*``), or None when none does.

    ``url`` comes from a trusted source, never argv. With None, the caller falls back to the
    embedded default cluster (``pgdr.cluster.resolve_target``).
    """
    env = os.environ if environ is None else environ
    if url:
        return Target(_checked(url, "the given URL"), "explicit")
    if env.get("DATABASE_URL"):
        return Target(_checked(env["DATABASE_URL"], "DATABASE_URL"), "DATABASE_URL")
    if any(env.get(name) for name in LIBPQ_SELECTORS):
        return Target("", "PG* variables")
    return None


def _checked(url: str, origin: str) -> str:
    """``url`` validated; a multi-host one (libpq syntax) goes to the primary unless it says.

    Everything pgdr does through the target may write (slots, settings, marks), so a list of
    hosts means "whichever is the primary now": ``target_session_attrs=read-write``.
    """
    try:
        params = conninfo_to_dict(url)
    except Exception as exc:
        raise ConfigError(f"{origin} is not a valid PostgreSQL connection string.") from exc
    if len(hosts(url)) > 1 and not params.get("target_session_attrs"):
        return make_conninfo(url, target_session_attrs="read-write")
    return url
