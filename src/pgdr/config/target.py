"""Which database a command works on.

``DATABASE_URL`` first, then the libpq ``PG*`` variables (``PGHOST``, ``PGSERVICE``, ...), then
the embedded default cluster under ``PGDR_HOME``. Passwords stay in the URL or in libpq's own
files; pgdr never prints them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgdr.config.settings import PgdrSettings
from pgdr.errors import ConfigError, RuntimeFailure

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

    def for_database(self, dbname: str) -> Target:
        return Target(make_conninfo(self.conninfo, dbname=dbname), self.source)


def client_environment(conninfo: str) -> tuple[str, dict[str, str]]:
    """For running a PostgreSQL client program: the connection string without its password,
    and an environment carrying the password as ``PGPASSWORD``, so it never appears in argv
    (which every local user can read in ``ps``)."""
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    env = dict(os.environ)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = password
    return make_conninfo("", **params), env


def redact(conninfo: str) -> str:
    try:
        params = conninfo_to_dict(conninfo)
    except Exception:  # a malformed string: print nothing of it
        return "<unparseable connection string>"
    if "password" in params:
        params["password"] = "***"  # noqa: S105 - a mask, not a secret
    return make_conninfo("", **{k: str(v) for k, v in params.items() if v is not None})


def resolve_target(
    settings: PgdrSettings, url: str | None = None, environ: Mapping[str, str] | None = None
) -> Target:
    """The target database; ``url`` (from a trusted source, never argv) wins over everything."""
    env = os.environ if environ is None else environ
    if url:
        return Target(_checked(url, "the given URL"), "explicit")
    if env.get("DATABASE_URL"):
        return Target(_checked(env["DATABASE_URL"], "DATABASE_URL"), "DATABASE_URL")
    if any(env.get(name) for name in LIBPQ_SELECTORS):
        return Target("", "PG* variables")
    from pgdr.cluster.manager import default_cluster  # noqa: PLC0415 - avoids an import cycle
    from pgdr.cluster.registry import lost_default  # noqa: PLC0415 - avoids an import cycle

    cluster = default_cluster(settings)
    lost = lost_default(settings)
    if lost:
        raise RuntimeFailure(lost)
    if not cluster.exists:
        raise RuntimeFailure(
            "No database is configured and the embedded default does not exist yet; "
            "run `pgdr db start` or set DATABASE_URL."
        )
    if not cluster.status().running:
        raise RuntimeFailure(
            "The embedded default database is not running; start it with `pgdr db start`."
        )
    return Target(cluster.conninfo(), "embedded")


def _checked(url: str, origin: str) -> str:
    try:
        conninfo_to_dict(url)
    except Exception as exc:
        raise ConfigError(f"{origin} is not a valid PostgreSQL connection string.") from exc
    return url
