"""The monitor with everything it watches and whom it tells."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pgdr.backup import Repository, open_repository
from pgdr.config import PgdrSettings
from pgdr.config.fleet import DEFAULT_DATABASE, Database
from pgdr.config.pool_settings import PoolSettings
from pgdr.config.settings import load_toml
from pgdr.core.errors import ConfigError, PgdrError
from pgdr.drills.detect import WatchTarget
from pgdr.drills.watch import check_drill_overdue
from pgdr.incident.store import FlapPolicy
from pgdr.monitoring.checks import ExtraCheck, MonitorConfig
from pgdr.monitoring.monitor import Monitor
from pgdr.monitoring.protection import ProtectionConfig, RepoOpener, protection_checks
from pgdr.notify import Dispatcher, load_notify_config
from pgdr.pool import make_pool
from pgdr.watch.integrity import check_integrity, run_integrity
from pgdr.watch.snapshot import check_rows_fell
from pgdr.watch.sources import import_sources

BACKUP_SLACK_S = 2 * 3600.0


def _monitor_table(settings: PgdrSettings) -> dict[str, Any]:
    table, _path = load_toml(settings)
    monitor = table.get("monitor", {})
    return monitor if isinstance(monitor, dict) else {}


def flap_policy(settings: PgdrSettings) -> FlapPolicy:
    """``open_after``/``resolve_after`` from ``[monitor]``: N failures open, M passes resolve."""
    table = _monitor_table(settings)
    return FlapPolicy(int(table.get("open_after", 1)), int(table.get("resolve_after", 1)))


def backup_period(db: Database) -> float | None:
    """How often the database's schedule takes a backup (full or incremental, the more
    frequent); None when both are off."""
    periods = [s.period_s() for job in ("full", "incremental") if (s := db.schedules.get(job))]
    return min(periods, default=None)


def protection_config(
    settings: PgdrSettings, backup_period_s: float | None = None
) -> ProtectionConfig:
    """``[monitor]``'s limits; without an explicit ``max_backup_age_hours`` the newest backup
    may be as old as the schedule's period plus half of it (at most two hours of slack)."""
    table = _monitor_table(settings)
    config = ProtectionConfig.from_toml(table)
    if backup_period_s is None or "max_backup_age_hours" in table:
        return config
    limit = backup_period_s + min(backup_period_s / 2, BACKUP_SLACK_S)
    return replace(config, max_backup_age_hours=limit / 3600)


def watch_checks(
    settings: PgdrSettings,
    conninfo: str | None,
    repo_name: str | None = None,
    records: Path | None = None,
    opener: RepoOpener | None = None,
    backup_period_s: float | None = None,
) -> list[ExtraCheck]:
    """The protection, drill and integrity checks, as callables to run every interval.

    ``records`` is the watched database's records directory (default ``$PGDR_HOME/records``),
    ``opener`` opens its repository (default: the configured ``repo_name``),
    ``backup_period_s`` its backup schedule (see :func:`protection_config`).
    """
    config = protection_config(settings, backup_period_s)
    env = dict(os.environ)
    checks = protection_checks(settings, conninfo, config, repo_name, env, opener)
    where = records or settings.home / "records"
    return [
        *checks,
        lambda: check_drill_overdue(settings.home),
        lambda: check_integrity(where),
    ]


@dataclass(frozen=True)
class Watched:
    """A database of the fleet as the monitor sees it: its name (the metrics' ``database``
    label), its records directory, how to open its repository and how often it is backed up."""

    name: str
    records: Path
    opener: RepoOpener | None = None
    backup_period_s: float | None = None


@dataclass
class MonitorSetup:
    """What a caller needs besides the monitor itself (``opener``: the watched database's
    repository, when it is not simply the configured ``repo_name``)."""

    monitor: Monitor
    settings: PgdrSettings
    dispatcher: Dispatcher | None = None
    repo_name: str | None = None
    opener: RepoOpener | None = None

    @property
    def name(self) -> str:
        return self.monitor.database

    def repository(self) -> Repository | None:
        """The watched database's repository, or None when none is configured or reachable."""
        with contextlib.suppress(PgdrError):
            return self.opener() if self.opener else open_repository(self.settings, self.repo_name)
        return None


def _repository_unknown() -> Repository:
    raise ConfigError("this monitor was built without its repository")


def adopt_monitor(monitor: Monitor, settings: PgdrSettings) -> MonitorSetup:
    """A monitor built elsewhere (the agent's) as a setup the API can serve: its repository is
    not known here, so the dashboard shows none rather than another database's."""
    return MonitorSetup(monitor, settings, opener=_repository_unknown)


def build_monitor(
    settings: PgdrSettings,
    conninfo: str,
    pool_settings: PoolSettings,
    interval: float = 120,
    repo_name: str | None = None,
    with_pool: bool = False,
    watched: Watched | None = None,
) -> MonitorSetup:
    """The monitor that ``monitor run``, ``serve`` and the agent run each ``interval``.

    ``with_pool`` opens a pgdr connection pool in the background (for ``serve``) so its in-use,
    idle and waiting counts are measured; it never blocks on a database that is down.
    ``watched`` names a database of the fleet (its metrics label, records and repository);
    by default the single database ``default``.
    """
    watched = watched or Watched(DEFAULT_DATABASE, settings.home / "records")
    records = watched.records
    pool = None
    if with_pool:
        pool = make_pool(conninfo, pool_settings, open_now=False, name="pgdr-monitor")
        pool.open(wait=False)
    monitor = Monitor(
        conninfo,
        records,
        pool_settings,
        MonitorConfig(interval_seconds=interval),
        pool=pool,
        extra=watch_checks(
            settings, conninfo, repo_name, records, watched.opener, watched.backup_period_s
        ),
        policy=flap_policy(settings),
        database=watched.name,
    )
    dispatcher = Dispatcher(load_notify_config(settings), monitor.incidents, records)

    def after_round() -> list[dict[str, Any]]:
        import_sources(monitor.incidents, settings.home)
        return [o.as_dict() for o in dispatcher.run()]

    monitor.after_round = after_round
    return MonitorSetup(monitor, settings, dispatcher, repo_name, watched.opener)


def drill_monitor(target: WatchTarget) -> Monitor:
    """The monitor of a drill's sandbox: the checks of :func:`build_monitor` (the runbook's,
    protection over the sandbox's repository, integrity) with ``[monitor]``'s flapping policy,
    plus the two a drill's disasters need: ``rows_fell`` against the sandbox's snapshot, and
    ``pgdr check`` run and recorded every round (production schedules it). No notifier (a
    drill pages nobody), no imported incidents, no drill schedule (it is about the fleet)."""
    config = protection_config(target.settings)
    protection = protection_checks(
        target.settings, target.conninfo, config, None, target.environ, target.repository
    )
    where, url, profile = target.records, target.conninfo, target.profile
    return Monitor(
        target.conninfo,
        target.records,
        PoolSettings(),
        MonitorConfig(interval_seconds=target.interval_s),
        extra=[
            *protection,
            # rows first: a round that sees the damage also runs `pgdr check` after it
            lambda: check_rows_fell(where, url, profile),
            lambda: run_integrity(where, url, profile),
        ],
        policy=flap_policy(target.settings),
        database="drill",
    )
