"""``pgdr restore``: bring a base backup back into a new data directory, optionally started."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pgdr.cli import pitr
from pgdr.cli.backup import RepoOption, open_repo, show_key_note
from pgdr.cli.common import JsonOption, settings
from pgdr.core.errors import ConfigError
from pgdr.core.output import console, emit, progress_bar
from pgdr.core.units import human_size
from pgdr.restore import (
    backup_chain,
    restore_backup,
    start_restored,
)
from pgdr.restore.delta import delta_restore


def restore(
    backup_id: Annotated[
        str | None,
        typer.Argument(help="Backup id, unique prefix, or 'latest' (with a target: optional)."),
    ] = None,
    to: Annotated[
        Path | None, typer.Option("--to", help="The new data directory to create.")
    ] = None,
    repo_name: RepoOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the directory if it exists and is not empty.")
    ] = False,
    start: Annotated[
        bool,
        typer.Option("--start", help="Start it on a free port and print its connection URL."),
    ] = False,
    port: Annotated[
        int | None, typer.Option(help="Port for --start (default: free).", min=1, max=65535)
    ] = None,
    target_time: pitr.TargetTimeOption = None,
    target_lsn: pitr.TargetLsnOption = None,
    target_xid: pitr.TargetXidOption = None,
    target_name: pitr.TargetNameOption = None,
    latest: pitr.LatestOption = False,
    exclusive: pitr.ExclusiveOption = False,
    accept_rollback: pitr.AcceptRollbackOption = False,
    timeline: pitr.TimelineOption = None,
    new_cluster: pitr.NewClusterOption = False,
    check_files: Annotated[
        bool,
        typer.Option(
            "--check-files",
            help="Also recompute every file's SHA-256 while restoring (one stream, slower).",
        ),
    ] = False,
    delta: Annotated[
        bool,
        typer.Option(
            "--delta",
            help="Rewrite only what differs in the existing data directory --to (with --force).",
        ),
    ] = False,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Parallel workers (default: cores).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Restore a base backup, or (with a target) the database as it was at a moment.

    Without a target: the base backup as it was at its end, into --to DIR. With --target-time,
    --target-lsn, --target-xid, --target-name or --latest: point-in-time recovery (see
    docs/point-in-time-recovery.md) into --to DIR or a --new-cluster left running.
    """
    target = pitr.make_target(target_time, target_lsn, target_xid, target_name, latest, exclusive)
    if target is not None or new_cluster:
        pitr.restore_to_point(
            target,
            backup_id,
            to,
            repo_name,
            new_cluster,
            start,
            force,
            port,
            timeline,
            as_json,
            accept_rollback,
        )
        return
    if backup_id is None or to is None:
        raise ConfigError(
            "Give a backup id and --to DIR, or a recovery target (--latest, --target-time ...)."
        )
    s = settings()
    repo = open_repo(repo_name)
    manifest = repo.read_manifest(repo.resolve_id(backup_id))
    total = sum(m.stream_size for m in backup_chain(repo, manifest))

    with progress_bar(f"Restoring {manifest.id}", total, enabled=not as_json) as advance:
        if delta:
            result = delta_restore(
                repo, manifest.id, to, force=force, progress=advance, workers=workers
            )
        else:
            result = restore_backup(
                repo,
                manifest.id,
                to,
                force=force,
                progress=advance,
                check_files=check_files,
                workers=workers,
            )
    data: dict[str, Any] = result.as_dict()
    if start:
        data |= start_restored(s, manifest.id, result.data_dir, result.pg_major, port)

    show_key_note(repo)

    def render() -> None:
        console.print(
            f"Restored backup {result.backup_id} into {result.data_dir}: "
            f"{result.files} files, {human_size(result.bytes_restored)}, "
            f"{result.duration_s:.1f} s."
        )
        for note in result.notes:
            console.print(note)
        if start:
            console.print(f"Started PostgreSQL {result.pg_version} on port {data['port']}.")
            console.print(f"URL: {data['url']}")

    emit(data, as_json, render)
