"""Which ``pg_dump``/``pg_restore`` to run: always the server's (or the dump's) major version.

Debian's PostgreSQL 15 ``pg_restore`` on ``PATH`` cannot read a PostgreSQL 18 dump ("unsupported
version (1.16) in file header"), and an older ``pg_dump`` refuses a newer server, so pgdr never
uses whatever is on ``PATH``: it picks the installation of exactly that major version.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from pgdr.cluster import PgInstallation, find_installations, installation_for_major
from pgdr.errors import ConfigError, RuntimeFailure


def binaries_for(major: int, what: str, pg_bin: Path | None = None) -> PgInstallation:
    """The installation of PostgreSQL ``major``; one sentence when there is none."""
    newest = max((i.major for i in find_installations(pg_bin)), default=0)
    if major > newest:
        raise ConfigError(
            f"{what} comes from PostgreSQL {major}, newer than any installed PostgreSQL "
            f"binaries (newest: {newest or 'none'}); install PostgreSQL {major}'s client programs."
        )
    return installation_for_major(major, pg_bin)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def run_tool(args: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> str:
    """Run a client program; its stdout, or its last stderr line as one sentence."""
    done = subprocess.run(
        args, capture_output=True, text=True, check=False, env=env, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeFailure(f"{Path(args[0]).name} failed: {last_line(done.stderr)}")
    return done.stdout
