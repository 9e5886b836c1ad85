"""The point-in-time half of ``pgdr restore``: the run and the report (its options are
:mod:`pgdr.cli.restore`'s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgdr.backup import open_repository
from pgdr.cli.common import render_settings
from pgdr.cli.common import settings as load_settings
from pgdr.cluster.manager import named_cluster
from pgdr.core.errors import ConfigError
from pgdr.core.output import console, emit, err_console, key_value_table, progress_bar, styled
from pgdr.restore.pitr import PitrResult, plan_pitr, run_pitr, wait_for_streamer
from pgdr.restore.start import new_cluster_dir, restart_as_primary
from pgdr.restore.target import Target
from pgdr.wal.archive import WalArchive, repository_archive

__all__ = ["restore_to_point"]


def restore_to_point(
    target: Target | None,
    backup_id: str | None,
    to: Path | None,
    repo_name: str | None,
    new_cluster: bool,
    start: bool,
    force: bool,
    port: int | None,
    timeline: str | None,
    as_json: bool,
    accept_rollback: bool = False,
    as_primary: bool = False,
) -> None:
    if target is None:
        raise ConfigError("--new-cluster restores to a point: add --latest or a --target-*.")
    if (to is None) == (not new_cluster):
        raise ConfigError("Give exactly one of --to DIR or --new-cluster.")
    repo = open_repository(load_settings(), repo_name)
    archive = repository_archive(repo)
    notes = _streamer_notes(archive) if target.kind == "latest" else []
    plan = plan_pitr(repo, archive, target, backup_id, timeline, accept_rollback)
    cluster_dir = new_cluster_dir(repo.settings, "pitr", plan.backup.id)
    data_dir = to if to is not None else cluster_dir / "data"
    total = plan.total_bytes(repo, archive.segment_size)
    with progress_bar("Restoring (WAL, then base backup)", total, enabled=not as_json) as advance:
        result = run_pitr(
            repo,
            archive,
            plan,
            data_dir,
            cluster_dir,
            keep_running=new_cluster or start,
            force=force,
            port=port,
            progress=lambda _what, n: advance(n),
        )
    result.notes = notes + result.notes
    data = result.as_dict()
    if as_primary:
        cluster = named_cluster(repo.settings, cluster_dir.name)  # its data may be elsewhere
        data["as_primary"] = restart_as_primary(cluster)
        result.url = data["url"] = data["as_primary"]["url"]
    emit(data, as_json, lambda: _render_pitr(result, data.get("as_primary")))


def _streamer_notes(archive: WalArchive) -> list[str]:
    """For ``--latest``: wait for the WAL streamer to catch up; what the user should know."""
    note = wait_for_streamer(archive)
    return [note] if note else []


def _recovered_to(result: PitrResult) -> str:
    if result.recovered_to_time is None:  # no transaction's commit replayed to date it
        return f"LSN {result.recovered_to_lsn} (no commit replayed after the backup to date it)"
    return f"{result.recovered_to_time} at LSN {result.recovered_to_lsn}"


def _render_pitr(result: PitrResult, primary: dict[str, Any] | None) -> None:
    rows = [
        ("backup", result.backup_id),
        ("target", result.target),
        ("recovered to", _recovered_to(result)),
        ("timeline", result.timeline),
        ("WAL replayed", f"{result.segments_fetched} segments"),
        ("data directory", result.data_dir),
        ("took", f"{result.duration_s:.1f} s (recovery {result.recovery_s:.1f} s)"),
    ]
    if result.url:
        rows.append(("URL", result.url))
    console.print(key_value_table("Point-in-time restore", rows))
    for note in result.notes:
        err_console.print(styled(note, "yellow"), highlight=False)
    if primary is not None:
        console.print("Restarted as the new primary:")
        render_settings(primary)
    if not result.running:
        console.print("The server was stopped after promotion; start it with --start next time.")
