"""Checks of the protection itself: backups, WAL, slot, restore tests, key files, TLS.

Each check is a plain callable returning one :class:`CheckResult` with the runbook's severity, so
``pgdr monitor run``, ``pgdr serve`` and the agent run the same list every interval. A check whose
input is missing (no repository configured, the server unreachable, no record yet) is reported as
*skipped* with the reason, never as passing. Nothing here writes anything.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pgdr.backup import Repository, open_repository
from pgdr.config import PgdrSettings
from pgdr.core.errors import PgdrError
from pgdr.core.severity import Severity
from pgdr.monitoring.checks import CheckResult, failed, passed, skipped
from pgdr.monitoring.tls import check_tls
from pgdr.wal.archive import WalArchive
from pgdr.wal.server import connect
from pgdr.wal.status import LagLimits, WalStatus, observe_wal

Check = Callable[[], CheckResult]
RepoOpener = Callable[[], Repository]
GIB = 1024**3


@dataclass(frozen=True)
class ProtectionConfig:
    """Limits; ``[monitor]`` in pgdr.toml overrides them (same names)."""

    max_backup_age_hours: float = 26.0  # a daily schedule plus slack
    max_restore_test_age_days: float = 7.0
    max_lag_bytes: int = 16 * 1024 * 1024
    max_lag_seconds: float = 300.0
    max_slot_retained_gb: float = 10.0
    cert_warn_days: float = 14.0

    @classmethod
    def from_toml(cls, table: dict[str, Any]) -> ProtectionConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in table.items() if k in known})


@dataclass
class Sources:
    """What the checks read; opened once per round, each part None with the reason if absent."""

    settings: PgdrSettings
    conninfo: str | None
    repo: Repository | None = None
    repo_error: str = ""
    wal: WalStatus | None = None
    wal_error: str = ""


def open_sources(
    settings: PgdrSettings,
    conninfo: str | None,
    config: ProtectionConfig,
    repo_name: str | None,
    opener: RepoOpener | None = None,
) -> Sources:
    """``opener`` opens the watched database's repository (a namespaced one for a database
    of ``[databases.NAME]``); by default the configured repository ``repo_name``."""
    sources = Sources(settings, conninfo)
    try:
        sources.repo = opener() if opener else open_repository(settings, repo_name)
        backups = sources.repo.list_backups()
    except PgdrError as exc:
        sources.repo_error = exc.message
        sources.wal_error = exc.message
        return sources
    try:
        archive = WalArchive.open(sources.repo.store, sources.repo.master_key)
        start = min((m.stop_datetime.timestamp() for m in backups), default=None)
        limits = LagLimits(config.max_lag_bytes, config.max_lag_seconds)
        sources.wal = observe_wal(archive, start, conninfo, limits)
    except PgdrError as exc:
        sources.wal_error = exc.message
    return sources


def _age(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def check_backup_age(src: Sources, config: ProtectionConfig) -> CheckResult:
    name = "backup_age"
    if src.repo is None:
        return skipped(name, f"no repository: {src.repo_error}")
    backups = src.repo.list_backups()
    if not backups:
        return failed(name, Severity.P1, "backup failure: the repository holds no backup")
    newest = backups[-1]
    age = time.time() - newest.stop_datetime.timestamp()
    facts = {
        "age_seconds": round(age, 3),
        "size_bytes": newest.stored_size,
        "duration_seconds": (newest.stop_datetime - newest.start_datetime).total_seconds(),
    }
    limit = config.max_backup_age_hours * 3600
    message = f"newest backup {newest.id} is {_age(age)} old"
    if age > limit:
        return failed(
            name,
            Severity.P1,
            f"{message} (allowed {config.max_backup_age_hours:g} h)",
            age,
            [facts],
        )
    return CheckResult(name, True, None, message, age, details=[facts])


def check_backup_failed(src: Sources) -> CheckResult:
    name = "backup_failed"
    if src.repo is None:
        return skipped(name, f"no repository: {src.repo_error}")
    failures = src.repo.backup_failures()
    backups = src.repo.list_backups()
    newest_ok = backups[-1].stop_datetime.timestamp() if backups else 0.0
    if failures and float(failures[-1]["at"]) > newest_ok:
        last = failures[-1]
        return failed(name, Severity.P1, f"the last backup failed: {last['error']}", 1)
    return passed(name, "the last backup succeeded" if backups else "no backup attempt failed", 0)


def check_wal_streamer(src: Sources) -> CheckResult:
    """Streamer silent or repository behind: P1, P0 when synchronous commits are blocked."""
    name = "wal_streamer"
    if src.wal is None:
        return skipped(name, f"no WAL archive: {src.wal_error}")
    wal = src.wal
    window = (
        wal.window_end - wal.window_start
        if wal.window_start is not None and wal.window_end is not None
        else None
    )
    facts = {
        "up": int(wal.streamer_alive),
        "lag_bytes": wal.lag_bytes,
        "lag_seconds": wal.lag_seconds,
        "window_seconds": window,
    }
    problems = [p for p in wal.problems if "missing segment" not in p]
    if problems:
        severity = Severity.P0 if wal.synchronous else Severity.P1
        return failed(name, severity, " ".join(problems), wal.lag_bytes, [facts])
    if wal.lag_bytes is None:
        reason = wal.server_error or "no server configured"
        result = skipped(name, f"lag not measured: {reason}")
        result.details = [facts]
        return result
    message = f"repository {wal.lag_bytes:,} bytes behind the server"
    return CheckResult(name, True, None, message, wal.lag_bytes, details=[facts])


def check_wal_gap(src: Sources) -> CheckResult:
    name = "wal_gap"
    if src.wal is None:
        return skipped(name, f"no WAL archive: {src.wal_error}")
    if src.wal.gaps:
        return failed(
            name, Severity.P0, f"gap in the recovery window at {src.wal.gaps[0]}", len(src.wal.gaps)
        )
    return passed(name, "no gap in the archived WAL", 0)


SLOT_RETAINED = """
SELECT slot_name, pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots
WHERE restart_lsn IS NOT NULL ORDER BY 2 DESC LIMIT 1
"""


def check_slot(src: Sources, config: ProtectionConfig) -> CheckResult:
    name = "replication_slot"
    if src.conninfo is None:
        return skipped(name, "no database configured")
    try:
        with connect(src.conninfo) as conn:
            row = conn.execute(SLOT_RETAINED).fetchone()
    except PgdrError as exc:
        return skipped(name, f"database unreachable: {exc.message}")
    if row is None:
        return passed(name, "no replication slot retains WAL", 0)
    slot, retained = str(row[0]), int(row[1])
    message = f"slot {slot} retains {retained / GIB:.2f} GB of WAL"
    if retained > config.max_slot_retained_gb * GIB:
        return failed(name, Severity.P1, f"{message} (limit {config.max_slot_retained_gb:g} GB)")
    return passed(name, message, retained)


def check_restore_test(src: Sources, config: ProtectionConfig) -> CheckResult:
    name = "restore_test"
    if src.repo is None:
        return skipped(name, f"no repository: {src.repo_error}")
    tests = [t for m in src.repo.list_backups() for t in src.repo.restore_tests(m.id)]
    if not tests:
        return failed(
            name, Severity.P1, "no restore test yet: run `pgdr backup verify --restore-test`"
        )
    last = max(tests, key=lambda t: str(t["at"]))
    age = time.time() - datetime.fromisoformat(str(last["at"])).timestamp()
    proven = [t for t in tests if t.get("passed")]
    facts = {
        "age_seconds": round(age, 3),
        "rto_seconds": max(proven, key=lambda t: str(t["at"]))["duration_s"] if proven else None,
    }
    if not last.get("passed"):
        message = f"the last restore test failed: {last.get('detail')}"
        return failed(name, Severity.P1, message, age, [facts])
    if age > config.max_restore_test_age_days * 86400:
        return failed(
            name,
            Severity.P1,
            f"the last restore test is {_age(age)} old "
            f"(allowed {config.max_restore_test_age_days:g} days)",
            age,
            [facts],
        )
    return CheckResult(name, True, None, f"passed {_age(age)} ago", age, details=[facts])


def key_files(settings: PgdrSettings, environ: dict[str, str]) -> list[Path]:
    paths = [settings.home / "keys" / "master.key", settings.home / "api-token"]
    for variable in ("PGDR_ENCRYPTION_KEY_FILE", "PGDR_API_TOKEN_FILE"):
        if environ.get(variable):
            paths.append(Path(environ[variable]))
    return paths


def check_key_files(paths: list[Path], required: list[Path]) -> CheckResult:
    """Key and token files: present when required, readable, mode 0600 (no group/other)."""
    name = "key_files"
    problems = []
    for path in paths:
        if not path.exists():
            if path in required:
                problems.append(f"{path} is missing")
            continue
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            path.read_bytes()
        except OSError as exc:
            problems.append(f"{path} cannot be read ({exc.strerror})")
            continue
        if mode & 0o077:
            problems.append(f"{path} has mode {mode:o}; it must be 0600")
    if problems:
        return failed(name, Severity.P1, "; ".join(problems), len(problems))
    return passed(name, f"{sum(p.exists() for p in paths)} key file(s) in order", 0)


def protection_checks(
    settings: PgdrSettings,
    conninfo: str | None,
    config: ProtectionConfig | None = None,
    repo_name: str | None = None,
    environ: dict[str, str] | None = None,
    opener: RepoOpener | None = None,
) -> list[Check]:
    """The checks of backups, WAL, slot, restore tests, key files and the TLS certificate.

    The repository and WAL archive are read once per round, by the first check that runs.
    """
    config = config or ProtectionConfig()
    env = dict(environ or {})
    cache: dict[str, Sources] = {}

    def sources() -> Sources:
        if "round" not in cache:
            cache["round"] = open_sources(settings, conninfo, config, repo_name, opener)
        return cache["round"]

    def first() -> CheckResult:
        cache.clear()  # a new round reads the repository afresh
        return check_backup_age(sources(), config)

    required = [Path(env[v]) for v in ("PGDR_ENCRYPTION_KEY_FILE",) if env.get(v)]
    return [
        first,
        lambda: check_backup_failed(sources()),
        lambda: check_wal_streamer(sources()),
        lambda: check_wal_gap(sources()),
        lambda: check_slot(sources(), config),
        lambda: check_restore_test(sources(), config),
        lambda: check_key_files(key_files(settings, env), required),
        lambda: check_tls(conninfo, config.cert_warn_days),
    ]
