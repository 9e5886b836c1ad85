"""Which ``pg_dump``/``pg_restore`` to run: always the server's (or the dump's) major version.

Debian's PostgreSQL 15 ``pg_restore`` on ``PATH`` cannot read a PostgreSQL 18 dump ("unsupported
version (1.16) in file header"), and an older ``pg_dump`` refuses a newer server, so pgdr never
uses whatever is on ``PATH``: it picks the installation of exactly that major version.
"""

from __future__ import annotations

from pathlib import Path

from pgdr.cluster import PgInstallation, find_installations, installation_for_major
from pgdr.core.errors import ConfigError

DIRECTORY_SUFFIX = ".dir.tar"  # the stored file of a directory-format (pg_dump -Fd) dump


def binaries_for(major: int, what: str, pg_bin: Path | None = None) -> PgInstallation:
    """The installation of PostgreSQL ``major``; one sentence when there is none."""
    newest = max((i.major for i in find_installations(pg_bin)), default=0)
    if major > newest:
        raise ConfigError(
            f"{what} comes from PostgreSQL {major}, newer than any installed PostgreSQL "
            f"binaries (newest: {newest or 'none'}); install PostgreSQL {major}'s client programs."
        )
    return installation_for_major(major, pg_bin)
