"""Point-in-time restore: a base backup plus the WAL up to a target, replayed and promoted.

The order is what makes it trustworthy:

1. **Plan and check, writing nothing.** The target is checked against the recovery window
   (from the oldest backup's end to the newest WAL in the repository); the right base backup is
   chosen (the newest one that ends before the target, on a timeline leading to it), its
   manifest authenticated and its chunks found; the WAL chain from the backup's start along the
   target timeline's history is listed, and a missing segment is named.
2. **Fetch and verify the WAL** into a staging spool next to the target (every segment opened
   and authenticated; for ``--latest`` the streamer's partial segment is presented under its
   full name, zero-padded, which PostgreSQL replays up to the zeros). A damaged segment stops
   the restore here, before the data directory exists.
3. **Restore the base backup** (the backup module's staged restore), move the spool inside the
   new data directory, and configure recovery: ``restore_command = 'cp <spool>/%f %p'`` (the
   server's OS user needs neither pgdr nor the keys), the target, ``recovery_target_timeline``
   and ``recovery_target_action = 'promote'``; a copied ``synchronous_standby_names`` is removed
   so the restored server never waits for a standby it does not have.
4. **Start, wait for promotion, report** the last replayed commit's timestamp and LSN, upload
   the new timeline's history file (so later restores pick unused timeline ids and can follow
   it) and remove the spool.

A time target that lies inside the window but after the last commit makes PostgreSQL stop with
"recovery ended before the configured target": everything committed before the target has then
been replayed, so pgdr restarts recovery to the end of the WAL and says so.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from pgdr.backup.manifest import Manifest, format_time
from pgdr.backup.repository import Repository
from pgdr.backup.seen import remember_wal, seen
from pgdr.cluster import LocalCluster, fatal_reason
from pgdr.cluster.service_user import ServiceUser, resolve_service_user
from pgdr.core.connect import connect
from pgdr.core.errors import CheckFailed, ConfigError, PgdrError, RuntimeFailure
from pgdr.core.log import logger
from pgdr.crypto import CorruptObject, parallel_map
from pgdr.restore.base import backup_chain, restore_backup
from pgdr.restore.staging import (
    check_space,
    claimed,
    remove_stale,
    restore_record,
    staging_dir,
    write_failure,
)
from pgdr.restore.start import adopt_restored
from pgdr.restore.target import Target
from pgdr.storage import ObjectNotFound
from pgdr.wal.archive import WalArchive
from pgdr.wal.chain import Chain, choose_timeline
from pgdr.wal.marks import find_mark
from pgdr.wal.names import (
    Segment,
    format_lsn,
    history_name,
    is_history,
    is_segment,
    parse_lsn,
    parse_segment,
    segment_of_lsn,
)
from pgdr.wal.server import current_timeline
from pgdr.wal.status import newest_wal_time
from pgdr.wal.transfer import fetch_segment

log = logger(__name__)

SPOOL_DIR = "pgdr_restore_wal"
RECOVERY_CONF = "pgdr-recovery.conf"
RECOVERY_TIMEOUT_S = 3600
STREAMER_SETTLE_S = 10.0
NOT_REACHED = "recovery ended before configured recovery target was reached"

Progress = Callable[[str, int], None]  # (what, bytes done)


@dataclass
class PitrPlan:
    target: Target
    backup: Manifest
    timeline: int
    segments: list[tuple[Segment, bool]]
    histories: list[str]
    window_start: datetime | None
    window_end: datetime | None
    target_lsn: int | None = None
    notes: list[str] = field(default_factory=list)

    def segment_names(self, size: int) -> list[str]:
        return [s.name(size) for s, _p in self.segments]

    def total_bytes(self, repo: Repository, segment_size: int) -> int:
        """What a progress bar counts: the WAL to fetch and the base backup's stream."""
        base = sum(m.stream_size for m in backup_chain(repo, self.backup))
        return len(self.segments) * segment_size + base


@dataclass
class PitrResult:
    backup_id: str
    data_dir: str
    target: str
    timeline: int
    recovered_to_time: str | None
    recovered_to_lsn: str | None
    segments_fetched: int
    wal_bytes: int
    duration_s: float
    recovery_s: float
    url: str | None = None
    port: int | None = None
    cluster_dir: str | None = None
    running: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_s"] = round(self.duration_s, 3)
        data["recovery_s"] = round(self.recovery_s, 3)
        return data


def _fmt(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds") if moment else "unknown"


def wait_for_streamer(archive: WalArchive, timeout: float = STREAMER_SETTLE_S) -> str | None:
    """For --latest: let a live streamer of a server that just died upload its last partial."""
    deadline = time.monotonic() + timeout
    while True:
        state = archive.get_state("streamer")
        if not state:
            return None
        fresh = time.time() - float(state.get("heartbeat_at", 0)) < 5
        if not fresh or state.get("state") != "streaming":
            return None
        if time.monotonic() >= deadline:
            return (
                "A streamer still receives WAL from the source server: restored to the WAL "
                "in the repository at this moment."
            )
        time.sleep(0.2)


def check_backup_stored(repo: Repository, manifest: Manifest) -> None:
    """Every chunk of the backup (and its chain) present with its recorded size."""
    for member in backup_chain(repo, manifest):
        member.authenticate(repo.master_key, f"of backup {member.id}")
        stored = {info.key: info.size for info in repo.store.list(f"backups/{member.id}/chunks/")}
        for index, chunk in enumerate(member.chunks):
            key = member.chunk_key(index)
            if stored.get(key) != chunk.stored_size:
                state = "missing" if key not in stored else "truncated or altered"
                raise CheckFailed(
                    f"Backup {member.id} cannot be restored: its chunk {index + 1} is {state}."
                )


def _resolve_target(archive: WalArchive, target: Target) -> tuple[int | None, datetime | None]:
    """The target's LSN and time where they are known before replaying anything."""
    if target.kind == "lsn" and target.value:
        return parse_lsn(target.value), None
    if target.kind == "time":
        return None, target.moment
    if target.kind == "name" and target.value:
        mark = find_mark(archive, target.value)
        if mark is None:
            raise CheckFailed(
                f"There is no restore point named {target.value!r} in the repository "
                "(see `pgdr mark`)."
            )
        return parse_lsn(str(mark["lsn"])), datetime.fromtimestamp(float(mark["at"]), UTC)
    return None, None


def _recorded_wal(repo: Repository, archive: WalArchive) -> dict[int, int]:
    """The newest WAL segment per timeline that pgdr recorded: this machine's memory and the
    streamer's and archiver's states in the repository."""
    recorded = {int(k): int(v) for k, v in seen(repo).get("wal", {}).items()}
    names = []
    for state, fields in (("streamer", ("last_segment", "partial")), ("partial", ("name",))):
        values = archive.get_state(state) or {}
        names += [str(values[f]) for f in fields if values.get(f)]
    names.append(str((archive.get_state("archive") or {}).get("last_segment") or ""))
    for name in names:
        if is_segment(name[:24]):
            seg = parse_segment(name[:24], archive.segment_size)
            recorded[seg.timeline] = max(recorded.get(seg.timeline, -1), seg.segno)
    return recorded


def _missing_backup(repo: Repository, backups: list[Manifest]) -> list[str]:
    """The newest backup this machine took, when the repository no longer holds it."""
    record = seen(repo)
    last = record.get("last_backup")
    if last and last not in {m.id for m in backups}:
        return [
            f"backup {last} (taken from this machine, ending {record.get('last_backup_at')}) "
            "is missing from the repository"
        ]
    return []


def _missing_wal(repo: Repository, archive: WalArchive, plan: PitrPlan, follow: bool) -> list[str]:
    """The WAL pgdr recorded that the repository no longer holds: the latest state it can
    restore is older than the one recorded."""
    record = seen(repo)
    size = archive.segment_size
    reached = plan.segments[-1][0] if plan.segments else None
    recorded = _recorded_wal(repo, archive)
    if reached is None:
        return []
    newest_tli = max(recorded, default=0)
    if follow and newest_tli > plan.timeline:
        seg = Segment(newest_tli, recorded[newest_tli])
        return [f"the WAL of timeline {newest_tli} (up to {seg.name(size)}) is missing"]
    if recorded.get(plan.timeline, -1) > reached.segno:
        seg = Segment(plan.timeline, recorded[plan.timeline])
        return [
            f"the WAL ends at {reached.name(size)} although pgdr recorded WAL up to "
            f"{seg.name(size)}"
        ]
    lsn = record.get("last_backup_lsn")
    if lsn and segment_of_lsn(parse_lsn(str(lsn)), size) > reached.segno:
        return [f"the WAL up to the end of backup {record.get('last_backup')} ({lsn}) is missing"]
    return []


def _check_rollback(
    repo: Repository,
    archive: WalArchive,
    plan: PitrPlan,
    backups: list[Manifest],
    follow: bool,
    accept: bool,
) -> None:
    """What pgdr recorded of the repository that it no longer holds stops a restore of "the
    latest" state: with WAL lost it would silently go back to an older state; with only a
    backup lost the WAL may still reach the end, but the repository lost something."""
    wal = _missing_wal(repo, archive, plan, follow)
    findings = _missing_backup(repo, backups) + wal
    if not findings:
        return
    reached = f"{_fmt(plan.window_end)} (WAL up to {plan.segment_names(archive.segment_size)[-1]})"
    text = f"The repository {repo.name} lost recent data: {'; '.join(findings)}. " + (
        f"The latest state it can restore is from {reached}, OLDER than what pgdr recorded"
        if wal
        else f"Its WAL still reaches {reached}, the latest state pgdr recorded, from an older "
        "backup; a repository that loses backups may have lost more"
    )
    if not accept:
        raise CheckFailed(f"{text}; nothing was restored (pass --accept-rollback to restore it).")
    plan.notes.append(
        f"{'ROLLBACK' if wal else 'LOST BACKUP'}: {text}; restored anyway (--accept-rollback)."
    )


def plan_pitr(
    repo: Repository,
    archive: WalArchive,
    target: Target,
    backup_id: str | None = None,
    timeline: str | None = None,
    accept_rollback: bool = False,
) -> PitrPlan:
    """Choose the backup and the WAL, and check both; raises before anything is written.

    For the latest state, the repository is also compared with what pgdr recorded of it
    (:mod:`pgdr.backup.seen`, the streamer's state): a repository that lost its newest backups
    or WAL is refused (CheckFailed) unless ``accept_rollback``, and then loudly noted.
    """
    chain = Chain.load(archive)
    sysid = str(archive.system_identifier)
    backups = [m for m in repo.list_backups() if m.system_identifier == sysid]
    if not backups:
        raise CheckFailed(
            f"The repository {repo.name} holds no base backup of this database system "
            f"({sysid}); take one with `pgdr backup`."
        )
    newest = newest_wal_time(archive)
    window_end = datetime.fromtimestamp(newest, UTC) if newest else None
    window_start = min(m.stop_datetime for m in backups)
    target_lsn, target_time = _resolve_target(archive, target)
    notes: list[str] = []

    if target_time is not None:
        _check_window(target_time, window_start, window_end)
    candidates = leading_to(chain, backups, timeline, target.kind == "latest")
    chosen = _choose_backup(repo, candidates, target, backup_id, target_lsn, target_time, notes)
    tli = choose_timeline(chain, chosen.timeline, parse_lsn(chosen.start_lsn), timeline)
    segments = _needed_wal(chain, archive.segment_size, chosen, tli, target, target_lsn, notes)
    histories = sorted(n for n, _s in archive.names() if is_history(n))
    plan = PitrPlan(
        target=target,
        backup=chosen,
        timeline=tli,
        segments=segments,
        histories=histories,
        window_start=window_start,
        window_end=window_end,
        target_lsn=target_lsn,
        notes=notes,
    )
    if target.kind == "latest":
        _check_rollback(repo, archive, plan, backups, timeline is None, accept_rollback)
    return plan


def _needed_wal(
    chain: Chain,
    size: int,
    chosen: Manifest,
    tli: int,
    target: Target,
    target_lsn: int | None,
    notes: list[str],
) -> list[tuple[Segment, bool]]:
    """The WAL from the backup's start along ``tli``, checked to cover the backup and target.

    For ``--latest`` the repository's WAL may end before the backup does (a streamer that was
    down or behind while it ran): the backup holds its own WAL (in ``pg_wal``), which
    PostgreSQL reads where the restore command has none, so it is restored to its own end."""
    base_lsn = parse_lsn(chosen.start_lsn)
    if target_lsn is not None and target_lsn < base_lsn:
        raise CheckFailed(f"{target.describe()} is before backup {chosen.id} starts.")
    required_until = segment_of_lsn(target_lsn, size) if target_lsn else None
    segments = chain.needed(tli, base_lsn, None, use_partial=True, required_until=required_until)
    last_seg = segments[-1][0].segno if segments else None
    stop_seg = segment_of_lsn(parse_lsn(chosen.stop_lsn), size)
    if last_seg is None or last_seg < stop_seg:
        if target.kind != "latest":
            raise CheckFailed(
                f"The WAL of backup {chosen.id} (up to {chosen.stop_lsn}) is not in the repository."
            )
        notes.append(
            f"The repository's WAL ends before backup {chosen.id} does ({chosen.stop_lsn}): "
            "recovered with the backup's own WAL, to the end of the backup."
        )
        return segments
    if target_lsn is not None and target_lsn > (last_seg + 1) * size:
        raise CheckFailed(
            f"{target.describe()} is after the newest WAL on timeline {tli} "
            f"(up to {format_lsn((last_seg + 1) * size)})."
        )
    return segments


def _check_window(moment: datetime, start: datetime, end: datetime | None) -> None:
    """A time target inside the recovery window (oldest backup's end .. newest WAL)."""
    if moment < start:
        raise CheckFailed(
            f"{_fmt(moment)} is before the recovery window, which starts at "
            f"{_fmt(start)} (the end of the oldest base backup)."
        )
    if end is None or moment > end:
        raise CheckFailed(
            f"{_fmt(moment)} is after the newest WAL in the repository "
            f"({_fmt(end)}): the recovery window ends there."
        )


def leading_to(
    chain: Chain, backups: list[Manifest], timeline: str | None, latest: bool
) -> list[Manifest]:
    """The backups from which the restore's timeline can be reached (all of them when none
    can, or when the timeline is chosen from the backup, as before).

    ``--timeline N``: those that reach N; a backup taken on the old timeline after N branched
    off cannot (chosen for being newest, it made the restore refuse "does not lead from the
    base backup"). The latest state with two histories going on in the repository (a
    point-in-time restore streaming into it while the old server still does, see
    :meth:`Chain.tips`): which one is meant is refused to be guessed; with one, those that
    reach it."""
    if timeline not in (None, "", "latest", "current"):
        text = str(timeline)
        try:
            wanted = int(text, 0) if text.startswith("0x") else int(text)
        except ValueError:
            return backups  # choose_timeline says what is wrong with it
    elif timeline == "current" or not latest:
        return backups
    else:
        tips = chain.tips()
        if len(tips) > 1:
            raise CheckFailed(
                f"The repository holds WAL of {len(tips)} timelines going on apart (timelines "
                f"{', '.join(str(t) for t in tips)}: a restored server streams into it while "
                "another still does); say which to restore with --timeline N."
            )
        if not tips:
            return backups
        wanted = tips[0]
    reaching = [m for m in backups if chain.leads_from(wanted, m.timeline, parse_lsn(m.start_lsn))]
    return reaching or backups


def _choose_backup(
    repo: Repository,
    backups: list[Manifest],
    target: Target,
    backup_id: str | None,
    target_lsn: int | None,
    target_time: datetime | None,
    notes: list[str],
) -> Manifest:
    """The given backup if it ends before the target, else the newest one that does."""

    def fits(m: Manifest) -> bool:
        if target_lsn is not None:
            return parse_lsn(m.stop_lsn) <= target_lsn
        if target_time is not None:
            return m.stop_datetime <= target_time
        return True

    if backup_id:
        chosen = repo.read_manifest(repo.resolve_id(backup_id))
        if not fits(chosen):
            raise CheckFailed(
                f"Backup {chosen.id} ends after {target.describe()}; it cannot be rolled back, "
                "choose an older backup or let pgdr choose."
            )
        return chosen
    if target.kind == "xid":
        notes.append("A transaction-id target replays from the oldest backup.")
        return backups[0]  # which backup precedes an xid is unknown: the oldest is safe
    fitting = [m for m in backups if fits(m)]
    if not fitting:
        first = min(backups, key=lambda m: parse_lsn(m.stop_lsn))
        raise CheckFailed(
            f"{target.describe()} is before the recovery window: the oldest base backup "
            f"({first.id}) ends at {first.stop_lsn}, {first.stop_time}."
        )
    return fitting[-1]


def fetch_wal(
    archive: WalArchive,
    plan: PitrPlan,
    spool: Path,
    progress: Progress | None = None,
    workers: int = 2,
    *,
    claimed_already: bool = False,
) -> int:
    """Fetch and authenticate every planned WAL file into ``spool``; returns bytes written.

    A partial segment that ends before the backup does (a streamer that was down or behind
    while the backup ran) is left out: served zero-padded, it would end recovery before the
    backup is consistent, and the backup holds its own copy of that segment (in ``pg_wal``),
    which PostgreSQL reads when the restore command has none. ``spool`` is made here, unless
    the caller made and holds it already (:func:`pgdr.restore.staging.claimed`)."""
    if not claimed_already:
        spool.mkdir(mode=0o700, parents=True)  # never one that exists (a planted link)
    size = archive.segment_size
    backup_end = parse_lsn(plan.backup.stop_lsn)
    total = 0

    def get(item: tuple[Segment, bool]) -> tuple[str, bytes | None]:
        seg, partial = item
        name = seg.name(size)
        try:
            data, received = fetch_segment(archive, name, allow_partial=partial)
        except ObjectNotFound:
            raise CheckFailed(
                f"WAL segment {name} vanished from the repository during the restore."
            ) from None
        except CorruptObject as exc:
            raise CheckFailed(
                f"WAL segment {name} in the repository is damaged "
                f"({exc.message.split(': ', 1)[-1].rstrip('.')}); nothing was restored."
            ) from None
        end = seg.start_lsn(size) + received
        if partial and end < backup_end:
            plan.notes.append(
                f"The repository's WAL ends at {format_lsn(end)}, "
                f"before backup {plan.backup.id} does ({plan.backup.stop_lsn}): recovered with "
                f"the backup's own copy of {name}, to the end of the backup's WAL."
            )
            return name, None
        return name, data

    for name in plan.histories:
        (spool / name).write_bytes(archive.get(name))
    for name, data in parallel_map(get, plan.segments, workers):
        if data is None:
            continue
        (spool / name).write_bytes(data)
        total += len(data)
        if progress:
            progress(name, len(data))
    return total


def _quote_conf(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def recovery_settings(plan: PitrPlan, spool: Path, with_target: bool = True) -> str:
    lines = [
        "# --- written by pgdr restore: point-in-time recovery (emptied after promotion)",
        f"restore_command = {_quote_conf(f'cp {spool}/%f %p')}",
        f"recovery_target_timeline = {_quote_conf(str(plan.timeline))}",
        "recovery_target_action = 'promote'",
    ]
    t = plan.target
    if with_target and t.kind != "latest" and t.value is not None:
        setting = {
            "time": "recovery_target_time",
            "lsn": "recovery_target_lsn",
            "xid": "recovery_target_xid",
            "name": "recovery_target_name",
        }[t.kind]
        value = t.value
        if t.kind == "time" and t.moment is not None:
            value = t.moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        lines.append(f"{setting} = {_quote_conf(value)}")
        if t.exclusive:
            lines.append("recovery_target_inclusive = false")
    return "\n".join(lines) + "\n"


INCLUDE_LINE = f"include_if_exists = '{RECOVERY_CONF}'  # pgdr restore: removed after promotion\n"


def _configure_recovery(data_dir: Path, plan: PitrPlan, spool: Path, owner: ServiceUser) -> None:
    """Recovery settings in a file of pgdr's own, included by one line pgdr takes out again
    (written as the service user's: the directory is that user's from the restore's start)."""
    owner.write(data_dir / RECOVERY_CONF, recovery_settings(plan, spool))
    owner.write(data_dir / "postgresql.conf", "\n" + INCLUDE_LINE, append=True)
    owner.write(data_dir / "recovery.signal", "")


def _unconfigure_recovery(cluster: LocalCluster) -> None:
    """After promotion: the data directory's configuration is the original's again (written as
    the service user's, whose server has run there: never through a link it left)."""
    conf = cluster.data_dir / "postgresql.conf"
    if conf.is_symlink():
        raise RuntimeFailure(f"{conf} has become a symbolic link; it was left as it is.")
    cluster.user.write(conf, conf.read_text().replace("\n" + INCLUDE_LINE, "", 1), 0o600)
    (cluster.data_dir / RECOVERY_CONF).unlink(missing_ok=True)


def _wait_promoted(cluster: LocalCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not cluster.status().running:
            raise RuntimeFailure("stopped")
        with (
            contextlib.suppress(psycopg.Error),
            connect(cluster.conninfo(), autocommit=True, timeout_s=5, raw_errors=True) as conn,
        ):
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row is not None and not row[0]:
                return
        time.sleep(0.1)
    raise RuntimeFailure(f"Recovery did not finish within {timeout:.0f} s; see {cluster.log_file}.")


def _log_tail(cluster: LocalCluster) -> str:
    try:
        return cluster.log_file.read_text(errors="replace")[-20000:]
    except OSError:
        return ""


def _recover(
    cluster: LocalCluster, plan: PitrPlan, spool: Path, timeout: float, notes: list[str]
) -> None:
    """Start the server and wait for its promotion (see the module note on time targets)."""
    data_dir = cluster.data_dir
    try:
        cluster.start()  # pg_ctl -w: fails already when recovery ends during startup
        _wait_promoted(cluster, timeout)
    except RuntimeFailure:
        log = _log_tail(cluster)
        if NOT_REACHED in log and plan.target.kind == "time":
            notes.append(
                "No transaction committed between the last one in the WAL and the target "
                "time: recovered to the end of the WAL, which is the state at that time."
            )
            settings = recovery_settings(plan, spool, with_target=False)
            cluster.user.write(data_dir / RECOVERY_CONF, settings)
            cluster.start()
            _wait_promoted(cluster, timeout)
        elif NOT_REACHED in log:
            raise CheckFailed(
                f"The WAL ends before {plan.target.describe()} was reached: it is not in "
                "the repository's recovery window."
            ) from None
        else:
            raise RuntimeFailure(
                f"The restored server stopped during recovery: {fatal_reason(cluster.log_file)}"
            ) from None


def _check_before_writing(
    repo: Repository,
    plan: PitrPlan,
    data_dir: Path,
    cluster_dir: Path,
    force: bool,
    publish_timeline: bool,
) -> None:
    """The target free (or --force), the backup's chunks stored, the repository writable."""
    if data_dir.exists() and any(data_dir.iterdir()) and not force:
        raise ConfigError(
            f"{data_dir} already exists and is not empty; restore into a new directory "
            "or pass --force to replace it."
        )
    if (cluster_dir / "cluster.json").exists():
        raise ConfigError(f"{cluster_dir} already holds a cluster; choose another place.")
    check_backup_stored(repo, plan.backup)
    try:
        if publish_timeline:
            repo.store.check_writable()
    except PgdrError as exc:
        raise RuntimeFailure(
            f"{exc.message.rstrip('.')}: a point-in-time restore records the new timeline "
            "there; nothing was restored."
        ) from exc


def run_pitr(
    repo: Repository,
    archive: WalArchive,
    plan: PitrPlan,
    data_dir: Path,
    cluster_dir: Path,
    *,
    keep_running: bool,
    force: bool = False,
    port: int | None = None,
    progress: Progress | None = None,
    timeout: float = RECOVERY_TIMEOUT_S,
    publish_timeline: bool = True,
    remember: bool = True,
) -> PitrResult:
    """Carry out a checked plan: fetch WAL, restore, recover, promote, report.

    Before writing anything it checks what must be writable (the repository, which receives
    the new timeline's history unless ``publish_timeline`` is off, and room for the WAL and
    the base backup next to the target); on any failure it removes everything it made (spool,
    data directory, cluster directory).
    ``publish_timeline=False`` (a throwaway restore test) keeps the new timeline's history file
    out of the repository, so the production server's WAL history is not touched.
    ``remember=False`` (the throwaway of a read command) leaves this machine's record of what
    it saw in the repository (:mod:`pgdr.backup.seen`) as it was.
    """
    log.info("Point-in-time restore of backup %s into %s.", plan.backup.id, data_dir)
    data_dir = data_dir.resolve()
    remove_stale(data_dir.parent)  # first: a killed --force restore's old contents go back
    _check_before_writing(repo, plan, data_dir, cluster_dir, force, publish_timeline)
    check_space(
        data_dir.parent, plan.total_bytes(repo, archive.segment_size), "point-in-time restore"
    )
    made = [cluster_dir] if not cluster_dir.exists() else []
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        with restore_record(repo.settings, data_dir, cluster_dir if made else None):
            result = _run(
                repo,
                archive,
                plan,
                data_dir,
                cluster_dir,
                made,
                keep_running,
                force,
                port,
                progress,
                timeout,
                publish_timeline,
            )
            if remember and plan.segments:
                remember_wal(repo, plan.segments[-1][0].timeline, plan.segments[-1][0].segno)
            return result
    except OSError as exc:
        raise write_failure(exc, data_dir.parent, "point-in-time restore") from exc


def _promoted(
    repo: Repository,
    archive: WalArchive,
    plan: PitrPlan,
    cluster: LocalCluster,
    publish_timeline: bool,
) -> tuple[int, datetime | None, str | None]:
    """After promotion: the new timeline (its history published), the last replayed commit's
    time and LSN; the data directory's configuration is the original's again."""
    with connect(cluster.conninfo(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_last_xact_replay_timestamp(), pg_last_wal_replay_lsn()::text"
        ).fetchone()
        assert row is not None
        new_tli = current_timeline(conn)
    history = cluster.data_dir / "pg_wal" / history_name(new_tli)
    if publish_timeline and new_tli > 1 and history.is_file():
        archive.push(history.name, history.read_bytes())
    _unconfigure_recovery(cluster)
    return new_tli, row[0], str(row[1]) if row[1] else None


def _release(
    cluster: LocalCluster, data_dir: Path, cluster_dir: Path, made: list[Path]
) -> Path | None:
    """Stop the recovered server; the cluster directory that stays, if any."""
    cluster.stop()
    if cluster_dir in made and not data_dir.is_relative_to(cluster_dir):
        # --to DIR: the cluster was only the vehicle of recovery; DIR stays a plain
        # data directory with its own configuration.
        shutil.rmtree(cluster_dir)
        (data_dir / "postmaster.opts").unlink(missing_ok=True)
        return None
    return cluster_dir


def _run(
    repo: Repository,
    archive: WalArchive,
    plan: PitrPlan,
    data_dir: Path,
    cluster_dir: Path,
    made: list[Path],
    keep_running: bool,
    force: bool,
    port: int | None,
    progress: Progress | None,
    timeout: float,
    publish_timeline: bool,
) -> PitrResult:
    began = time.monotonic()
    staging = staging_dir(data_dir, "wal")
    claim = contextlib.ExitStack()  # the WAL's staging is held until it becomes the spool
    try:
        claim.enter_context(claimed(staging))
        wal_bytes = fetch_wal(archive, plan, staging, progress, claimed_already=True)
        restore_backup(
            repo,
            plan.backup.id,
            data_dir,
            force=force,
            progress=(lambda n: progress("base backup", n)) if progress else None,
        )
        made.append(data_dir)
        spool = data_dir / SPOOL_DIR
        staging.rename(spool)
        owner = resolve_service_user(repo.settings.service_user)
        _configure_recovery(data_dir, plan, spool, owner)
        cluster = adopt_restored(
            repo.settings, data_dir, plan.backup.pg_major, cluster_dir, port=port
        )
        recovering = time.monotonic()
        notes = list(plan.notes)
        _recover(cluster, plan, spool, timeout, notes)
        recovery_s = time.monotonic() - recovering
        new_tli, at, lsn = _promoted(repo, archive, plan, cluster, publish_timeline)
        shutil.rmtree(spool, ignore_errors=True)
        port, url = cluster.port, cluster.conninfo()  # before a --to DIR's cluster goes
        kept_dir = cluster_dir if keep_running else _release(cluster, data_dir, cluster_dir, made)
        return PitrResult(
            backup_id=plan.backup.id,
            data_dir=str(data_dir),
            target=plan.target.describe(),
            timeline=new_tli,
            recovered_to_time=format_time(at) if at else None,
            recovered_to_lsn=lsn,
            segments_fetched=len(plan.segments),
            wal_bytes=wal_bytes,
            duration_s=time.monotonic() - began,
            recovery_s=recovery_s,
            url=url if keep_running else None,
            port=port,
            cluster_dir=str(kept_dir) if kept_dir else None,
            running=keep_running,
            notes=notes,
        )
    except BaseException:
        _undo(repo, staging, data_dir, cluster_dir, made)
        raise
    finally:
        claim.close()


def _undo(
    repo: Repository, staging: Path, data_dir: Path, cluster_dir: Path, made: list[Path]
) -> None:
    """Leave nothing of a failed run: the WAL staging, a started server, what it created."""
    shutil.rmtree(staging, ignore_errors=True)
    if data_dir in made:
        with contextlib.suppress(Exception):
            LocalCluster(cluster_dir, repo.settings, data_dir=data_dir).stop("immediate")
    for path in reversed(made):
        shutil.rmtree(path, ignore_errors=True)
