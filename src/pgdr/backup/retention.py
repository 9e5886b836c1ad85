"""Retention in the runbook's terms, and ``pgdr prune``.

A repository's policy has three windows, all in days: ``recovery_window_days`` (every backup
finished inside the window, plus the newest one before it, so any moment of the window has a base
to replay WAL from), ``daily_days`` (the newest backup of each UTC day) and ``weekly_days`` (the
newest backup of each ISO week). Backups taken with ``--keep`` (before a major change) stay
``keep_days`` (0, the default: they never expire), so a tier such as the runbook's secondary
(90 days, weekly plus before major changes) ages them out too. Whatever is kept also keeps what
it needs: an incremental backup's parents. The newest valid backup is never removed, a backup
whose manifest fails authentication is reported and left alone, and manifests sealed by another
master key stop the run before anything is removed (as ``backup list`` does). Logical backups
(``dumps/``) are planned kind by kind: dumps, schema dumps and exports are separate series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pgdr.backup.manifest import BACKUPS, DUMPS, Manifest, now_utc
from pgdr.backup.repository import Repository, RetentionPolicy, unreadable_error
from pgdr.core.errors import ConfigError, PgdrError, RuntimeFailure


@dataclass
class Decision:
    backup_id: str
    keep: bool
    reasons: list[str] = field(default_factory=list)
    stored_size: int = 0
    stop_time: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "keep": self.keep,
            "reasons": self.reasons,
            "stored_size": self.stored_size,
            "stop_time": self.stop_time,
        }


def plan_retention(
    backups: list[Manifest], policy: RetentionPolicy, now: datetime | None = None
) -> list[Decision]:
    """Which backups stay and why; ``backups`` are valid (authenticated) manifests."""
    now = now or now_utc()
    ordered = sorted(backups, key=lambda m: (m.stop_time, m.id))
    reasons: dict[str, list[str]] = {m.id: [] for m in ordered}
    if ordered:
        reasons[ordered[-1].id].append("newest backup")
    keep_from = now - timedelta(days=policy.keep_days)
    for m in ordered:
        if m.keep and (policy.keep_days == 0 or m.stop_datetime >= keep_from):
            note = f" for {policy.keep_days} days" if policy.keep_days else ""
            reasons[m.id].append(f"kept (--keep){note}")
    if policy.recovery_window_days > 0:
        start = now - timedelta(days=policy.recovery_window_days)
        before = [m for m in ordered if m.stop_datetime < start]
        for m in ordered:
            if m.stop_datetime >= start:
                reasons[m.id].append(f"in the {policy.recovery_window_days}-day recovery window")
        if before:
            reasons[before[-1].id].append("base for the start of the recovery window")
    _newest_per(ordered, reasons, now, policy.daily_days, "daily", _day)
    _newest_per(ordered, reasons, now, policy.weekly_days, "weekly", _week)
    by_id = {m.id: m for m in ordered}
    for m in reversed(ordered):  # newest first, so a chain is kept before its parents are seen
        if reasons[m.id]:
            _keep_parents(by_id, reasons, m)
    return [
        Decision(m.id, bool(reasons[m.id]), reasons[m.id], m.stored_size, m.stop_time)
        for m in ordered
    ]


def _keep_parents(by_id: dict[str, Manifest], reasons: dict[str, list[str]], m: Manifest) -> None:
    parent = m.parent
    while parent is not None and parent in by_id:
        note = f"parent of {m.id}"
        if note not in reasons[parent]:
            reasons[parent].append(note)
        parent = by_id[parent].parent


def keep_also(
    decisions: list[Decision], backups: list[Manifest], chosen: Manifest, reason: str
) -> None:
    """Keep ``chosen`` for ``reason``, and the parents it needs, whatever the dates said."""
    reasons = {d.backup_id: d.reasons for d in decisions}
    reasons[chosen.id].append(reason)
    _keep_parents({m.id: m for m in backups}, reasons, chosen)
    for decision in decisions:
        decision.keep = bool(decision.reasons)


def plan_by_kind(
    manifests: list[Manifest], policy: RetentionPolicy, now: datetime | None = None
) -> list[Decision]:
    """``plan_retention`` for each kind apart (logical backups: dump, schema dump, export), so
    one kind never takes another's place as a period's snapshot or the newest one."""
    decisions: list[Decision] = []
    for kind in sorted({m.kind for m in manifests}):
        decisions += plan_retention([m for m in manifests if m.kind == kind], policy, now)
    return sorted(decisions, key=lambda d: (d.stop_time, d.backup_id))


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def _newest_per(
    ordered: list[Manifest],
    reasons: dict[str, list[str]],
    now: datetime,
    days: int,
    kind: str,
    bucket: Any,
) -> None:
    if days <= 0:
        return
    start = now - timedelta(days=days)
    newest: dict[str, Manifest] = {}
    for m in ordered:
        if m.stop_datetime >= start:
            newest[bucket(m.stop_datetime)] = m  # ordered, so the last one wins
    for period, m in newest.items():
        reasons[m.id].append(f"{kind} snapshot {period}")


@dataclass
class PruneReport:
    repository: str
    dry_run: bool
    decisions: list[Decision]
    invalid: list[str]
    incomplete_removed: list[str]
    noun: str = "backup"

    def left_alone(self) -> PgdrError | None:
        """Backups that cannot be read were left alone: not a clean run (after its report)."""
        if not self.invalid:
            return None
        return RuntimeFailure(
            f"{len(self.invalid)} {self.noun}(s) in the repository {self.repository} cannot be "
            f"read or trusted and were left alone: {', '.join(self.invalid)}; run "
            f"`pgdr {'dump' if self.noun == 'dump' else 'backup'} verify` on them."
        )

    @property
    def removed(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]

    def as_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "dry_run": self.dry_run,
            "backups": [d.as_dict() for d in self.decisions],
            "removed": [d.backup_id for d in self.removed],
            "freed_bytes": sum(d.stored_size for d in self.removed),
            "invalid": self.invalid,
            "incomplete_removed": self.incomplete_removed,
        }


def require_repository(repo: Repository) -> None:
    """A repository that nothing was ever stored in is named, not created (a mistyped path
    would otherwise "prune" an empty new repository and say it freed nothing)."""
    if not repo.exists():
        raise ConfigError(
            f"There is no repository at {repo.url} ({repo.name}): nothing was ever stored "
            "there, so there is nothing to prune; is the path right?"
        )


def decide(
    repo: Repository, area: str, policy: RetentionPolicy, now: datetime | None
) -> tuple[list[Manifest], list[Decision], list[str]]:
    """The authenticated manifests, the decision on each, and the ids of the damaged ones
    (left alone). Manifests sealed by another key stop it first: what they hold is unknown,
    and that is the wrong key, not damage."""
    valid, damaged = repo.scan_backups(area)
    wrong_key = [d for d in damaged if d.wrong_key]
    if wrong_key:
        noun = "dump" if area == DUMPS else "backup"
        raise unreadable_error(repo.name, repo.master_key.key_id, wrong_key, noun)
    plan = plan_by_kind if area == DUMPS else plan_retention
    return valid, plan(valid, policy, now), [d.backup_id for d in damaged]


def carry_out(repo: Repository, decisions: list[Decision], area: str = BACKUPS) -> list[str]:
    """Remove what ``decisions`` do not keep, and interrupted backups' leftovers (which it
    returns); only while holding the repository's lock."""
    incomplete = repo.clean_incomplete(area=area)
    for decision in decisions:
        if not decision.keep:
            repo.delete_backup(decision.backup_id, area)
    return incomplete


def prune(
    repo: Repository,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    area: str = DUMPS,
    policy: RetentionPolicy | None = None,
) -> PruneReport:
    """Apply a retention policy to the logical backups (``pgdr dump prune``; or only show it
    with ``dry_run``), each kind apart. Base backups are pruned with their WAL, under the same
    lock, by :func:`pgdr.wal.retention.prune_repository`."""
    require_repository(repo)
    policy = policy or repo.config.retention
    if dry_run:
        _valid, decisions, invalid = decide(repo, area, policy, now)
        incomplete = repo.incomplete_backups(area)
        return PruneReport(repo.name, True, decisions, invalid, incomplete, "dump")
    repo.store.check_writable()
    with repo.locked("prune"):
        _valid, decisions, invalid = decide(repo, area, policy, now)
        incomplete = carry_out(repo, decisions, area)
    return PruneReport(repo.name, False, decisions, invalid, incomplete, "dump")
