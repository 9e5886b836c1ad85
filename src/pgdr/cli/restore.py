"""``pgdr restore``: bring a base backup back into a new data directory, optionally started."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pgdr.cli.backup import RepoOption, human_size, open_repo, show_key_note
from pgdr.cli.common import JsonOption, console, emit, progress_bar, settings
from pgdr.restore import adopt_restored, backup_chain, restore_backup


def restore(
    backup_id: Annotated[str, typer.Argument(help="Backup id, unique prefix, or 'latest'.")],
    to: Annotated[Path, typer.Option("--to", help="The new data directory to create.")],
    repo_name: RepoOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the directory if it exists and is not empty.")
    ] = False,
    start: Annotated[
        bool,
        typer.Option("--start", help="Start it on a free port and print its connection URL."),
    ] = False,
    port: Annotated[int | None, typer.Option(help="Port for --start (default: free).")] = None,
    check_files: Annotated[
        bool,
        typer.Option(
            "--check-files",
            help="Also recompute every file's SHA-256 while restoring (one stream, slower).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Restore a base backup (to the end of the backup) into a new data directory."""
    s = settings()
    repo = open_repo(repo_name)
    manifest = repo.read_manifest(repo.resolve_id(backup_id))
    total = sum(m.stream_size for m in backup_chain(repo, manifest))

    with progress_bar(f"Restoring {manifest.id}", total, enabled=not as_json) as advance:
        result = restore_backup(
            repo, manifest.id, to, force=force, progress=advance, check_files=check_files
        )
    data: dict[str, Any] = result.as_dict()
    if start:
        cluster_dir = s.home / "clusters" / f"restore-{manifest.id}"
        suffix = 1
        while cluster_dir.exists():
            suffix += 1
            cluster_dir = s.home / "clusters" / f"restore-{manifest.id}-{suffix}"
        cluster = adopt_restored(s, result.data_dir, result.pg_major, cluster_dir, port=port)
        cluster.start()
        data |= {"url": cluster.conninfo(), "port": cluster.port, "cluster_dir": str(cluster_dir)}

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
