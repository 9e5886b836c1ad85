"""``pgdr restore``: bring a base backup back into a new data directory, optionally started,
optionally configured as a standby of a running primary (``--as-standby``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pgdr.backup.manifest import Manifest
from pgdr.backup.repository import Repository
from pgdr.cli.common import JsonOption, WorkersOption, render_settings, settings
from pgdr.cli.repository import RepoOption, open_repo, show_key_note
from pgdr.cluster.manager import named_cluster
from pgdr.core.errors import ConfigError
from pgdr.core.output import console, emit, escape, progress_bar
from pgdr.core.units import human_size
from pgdr.restore import RestoreResult, backup_chain, restore_backup
from pgdr.restore.delta import delta_restore
from pgdr.restore.target import make_target

TargetTimeOption = Annotated[
    str | None,
    typer.Option("--target-time", help="Recover to this moment (ISO 8601; UTC if no zone)."),
]
TargetLsnOption = Annotated[
    str | None, typer.Option("--target-lsn", help="Recover up to this WAL position (X/Y).")
]
TargetXidOption = Annotated[
    str | None, typer.Option("--target-xid", help="Recover up to this transaction id.")
]
TargetNameOption = Annotated[
    str | None, typer.Option("--target-name", help="Recover to a restore point (`pgdr mark`).")
]
LatestOption = Annotated[
    bool, typer.Option("--latest", help="Recover everything in the repository (disaster).")
]
TimelineOption = Annotated[
    str | None,
    typer.Option(
        "--timeline",
        help="Timeline to follow: a number, 'current' (the backup's), or 'latest' (default: "
        "the newest timeline holding WAL).",
    ),
]
ExclusiveOption = Annotated[
    bool,
    typer.Option(
        "--exclusive",
        help="Stop just before the target transaction, time or LSN (e.g. the xid of a bad "
        "DELETE), instead of just after it.",
    ),
]
AcceptRollbackOption = Annotated[
    bool,
    typer.Option(
        "--accept-rollback",
        help="With --latest: restore even though the repository lost backups or WAL that "
        "pgdr recorded (the result is older than the latest state).",
    ),
]
NewClusterOption = Annotated[
    bool,
    typer.Option("--new-cluster", help="Restore into a new pgdr cluster left running."),
]


BackupArgument = Annotated[
    str | None,
    typer.Argument(help="Backup id, unique prefix, or 'latest' (with a target: optional)."),
]
ToOption = Annotated[Path | None, typer.Option("--to", help="The new data directory to create.")]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Replace the directory if it exists and is not empty.")
]
StartOption = Annotated[
    bool, typer.Option("--start", help="Start it on a free port and print its connection URL.")
]
PortOption = Annotated[
    int | None, typer.Option(help="Port for --start (default: free).", min=1, max=65535)
]
CheckFilesOption = Annotated[
    bool,
    typer.Option(
        "--check-files",
        help="Also recompute every file's SHA-256 while restoring (one stream, slower).",
    ),
]
DeltaOption = Annotated[
    bool,
    typer.Option(
        "--delta",
        help="Rewrite only what differs in the existing data directory --to (with --force).",
    ),
]
ByWalOption = Annotated[
    bool,
    typer.Option(
        "--by-wal",
        help="With --delta: find the changed pages in the WAL instead of reading every page, "
        "where the WAL can say (see docs/backups.md); the report says what was left unread.",
    ),
]
AsPrimaryOption = Annotated[
    bool,
    typer.Option(
        "--as-primary",
        help="With --new-cluster or --start: once restored, restart it as the new primary (its "
        "own configuration then decides WAL archiving and synchronous standbys); for when the "
        "original is gone (see docs/point-in-time-recovery.md).",
    ),
]
AsStandbyOption = Annotated[
    bool,
    typer.Option(
        "--as-standby",
        help="Configure --to DIR as a streaming replica of the server named by "
        "--primary-conninfo-env (see docs/high-availability.md).",
    ),
]
PrimaryConninfoEnvOption = Annotated[
    str | None,
    typer.Option(
        "--primary-conninfo-env",
        metavar="VAR",
        help="With --as-standby: the environment variable holding the primary's connection "
        "string (its password is kept out of the configuration).",
    ),
]


def restore(
    backup_id: BackupArgument = None,
    to: ToOption = None,
    repo_name: RepoOption = None,
    force: ForceOption = False,
    start: StartOption = False,
    port: PortOption = None,
    target_time: TargetTimeOption = None,
    target_lsn: TargetLsnOption = None,
    target_xid: TargetXidOption = None,
    target_name: TargetNameOption = None,
    latest: LatestOption = False,
    exclusive: ExclusiveOption = False,
    accept_rollback: AcceptRollbackOption = False,
    timeline: TimelineOption = None,
    new_cluster: NewClusterOption = False,
    check_files: CheckFilesOption = False,
    delta: DeltaOption = False,
    by_wal: ByWalOption = False,
    workers: WorkersOption = None,
    as_primary: AsPrimaryOption = False,
    as_standby: AsStandbyOption = False,
    primary_conninfo_env: PrimaryConninfoEnvOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restore a base backup, or (with a target) the database as it was at a moment.

    Without a target: the base backup as it was at its end, into --to DIR. With --target-time,
    --target-lsn, --target-xid, --target-name or --latest: point-in-time recovery (see
    docs/point-in-time-recovery.md) into --to DIR or a --new-cluster left running. With
    --as-standby: DIR starts as a replica that catches up from the repository and the primary.
    """
    target = make_target(target_time, target_lsn, target_xid, target_name, latest, exclusive)
    to_point = target is not None or new_cluster
    _check_standby_options(as_standby, primary_conninfo_env, to_point or delta)
    _check_companions(delta, by_wal, check_files, new_cluster or start, as_primary)
    if to_point:
        # Loaded here, as for --start and --as-standby: these need psycopg, which is a third of
        # a cold start, and a restore of a base backup never connects (docs/architecture.md).
        from pgdr.cli.pitr import restore_to_point  # noqa: PLC0415

        restore_to_point(
            target, backup_id, to, repo_name, new_cluster, start, force, port, timeline,
            as_json, accept_rollback, as_primary,
        )  # fmt: skip
        return
    backup_id, to = _base_backup_and_place(backup_id, to)
    repo = open_repo(repo_name)
    manifest = repo.read_manifest(repo.resolve_id(backup_id))
    how = ("by-wal" if by_wal else "delta") if delta else None
    result = _lay_down(
        repo, manifest, to, force, how, primary_conninfo_env, check_files, workers, as_json
    )
    data: dict[str, Any] = result.as_dict() | {"standby": as_standby}
    if start:
        data |= _start(result, port, as_primary)
    show_key_note(repo)
    emit(data, as_json, lambda: _render(result, data))


def _base_backup_and_place(backup_id: str | None, to: Path | None) -> tuple[str, Path]:
    """A restore without a recovery target needs both a backup and a place."""
    if backup_id is None or to is None:
        raise ConfigError(
            "Give a backup id and --to DIR, or a recovery target (--latest, --target-time ...)."
        )
    return backup_id, to


def _check_companions(
    delta: bool, by_wal: bool, check_files: bool, starts: bool, as_primary: bool
) -> None:
    if by_wal and not delta:
        raise ConfigError("--by-wal goes with --delta.")
    if check_files and delta:
        raise ConfigError(
            "--check-files goes with a full restore: a delta restore checks every file against "
            "the backup already (docs/backups.md)."
        )
    if as_primary and not starts:
        raise ConfigError(
            "--as-primary restarts the restored server: add --new-cluster or --start."
        )


def _start(result: RestoreResult, port: int | None, as_primary: bool) -> dict[str, Any]:
    """``--start``: the restored directory adopted and started (``--as-primary``: restarted
    as the new primary); where it runs."""
    from pgdr.restore.start import restart_as_primary, start_restored  # noqa: PLC0415

    started: dict[str, Any] = start_restored(
        settings(), result.backup_id, result.data_dir, result.pg_major, port
    )
    if as_primary:
        cluster = named_cluster(settings(), Path(str(started["cluster_dir"])).name)
        started["as_primary"] = restart_as_primary(cluster)
    return started


def _lay_down(
    repo: Repository,
    manifest: Manifest,
    to: Path,
    force: bool,
    delta: str | None,
    conninfo_env: str | None,
    check_files: bool,
    workers: int | None,
    as_json: bool,
) -> RestoreResult:
    """The backup's files into ``to``: in full, as a delta (``"delta"``, or ``"by-wal"``: its
    changed pages found in the WAL), or configured as a standby."""
    total = sum(m.stream_size for m in backup_chain(repo, manifest))
    with progress_bar(f"Restoring {manifest.id}", total, enabled=not as_json) as advance:
        if delta:
            return delta_restore(
                repo, manifest.id, to, force=force, progress=advance, workers=workers,
                by_wal=delta == "by-wal",
            )  # fmt: skip
        if conninfo_env is not None:
            from pgdr.restore.standby import restore_as_standby  # noqa: PLC0415

            return restore_as_standby(
                repo, manifest.id, to, conninfo_env, force=force, progress=advance,
                workers=workers,
            )  # fmt: skip
        return restore_backup(
            repo, manifest.id, to, force=force, progress=advance, check_files=check_files,
            workers=workers,
        )  # fmt: skip


def _check_standby_options(as_standby: bool, conninfo_env: str | None, to_point: bool) -> None:
    if as_standby and conninfo_env is None:
        raise ConfigError("--as-standby needs --primary-conninfo-env VAR (the primary's address).")
    if conninfo_env is not None and not as_standby:
        raise ConfigError("--primary-conninfo-env goes with --as-standby.")
    if as_standby and to_point:
        raise ConfigError(
            "--as-standby restores a base backup to follow the primary: it takes no recovery "
            "target, --new-cluster or --delta."
        )


def _render(result: RestoreResult, data: dict[str, Any]) -> None:
    console.print(
        f"Restored backup {result.backup_id} into {escape(str(result.data_dir))}: "
        f"{result.files} files, {human_size(result.bytes_restored)}, "
        f"{result.duration_s:.1f} s."
    )
    for note in result.notes:
        console.print(escape(note))
    if "port" in data:
        console.print(f"Started PostgreSQL {result.pg_version} on port {data['port']}.")
    if "as_primary" in data:
        console.print("Restarted as the new primary:")
        render_settings(data["as_primary"])
    if "port" in data:
        console.print(f"URL: {escape(data['url'])}")
