"""``pgdr repo`` (init, info, list, copy) and ``pgdr prune``: repositories and retention."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from pgdr.backup import load_repositories
from pgdr.backup.repository import DEFAULT_REPOSITORY
from pgdr.cli.common import JsonOption, settings
from pgdr.cli.repository import RepoOption, open_repo
from pgdr.core.errors import ConfigError
from pgdr.core.output import console, emit, key_value_table, progress_bar, styled
from pgdr.core.units import human_size
from pgdr.wal.retention import prune_repository
from pgdr.wal.tier import copy_to_tier

app = typer.Typer(
    help="Backup repositories: create, describe, copy between tiers.", no_args_is_help=True
)

NameArgument = Annotated[
    str, typer.Argument(help="Repository name from pgdr.toml (default: primary).")
]


@app.command()
def init(name: NameArgument = DEFAULT_REPOSITORY, as_json: JsonOption = False) -> None:
    """Create a repository (and its S3 bucket) if it does not exist yet."""
    repo = open_repo(name)
    created = repo.initialise()
    repo.store.check_writable()
    data = {"repository": repo.name, "url": repo.url, "created": created}
    verb = "Created" if created else "Already initialised:"
    emit(data, as_json, lambda: console.print(f"{verb} repository {repo.name} at {repo.url}."))


@app.command()
def info(name: NameArgument = DEFAULT_REPOSITORY, as_json: JsonOption = False) -> None:
    """Describe a repository: where it is, its policy, what it holds."""
    repo = open_repo(name)
    record = repo.info_record()
    backups = repo.list_backups() if record is not None or repo.backup_dirs() else []
    lock = repo.read_lock()
    data: dict[str, Any] = {
        "repository": repo.name,
        "url": repo.url,
        "configured_by": repo.config.source,
        "initialised": record is not None,
        "created_at": (record or {}).get("created_at"),
        "system_identifier": (record or {}).get("system_identifier"),
        "retention": repo.config.retention.as_dict(),
        "chunk_size": repo.config.chunk_size,
        "backups": len(backups),
        "stored_bytes": sum(m.stored_size for m in backups),
        "newest": backups[-1].id if backups else None,
        "oldest": backups[0].id if backups else None,
        "incomplete": repo.incomplete_backups(),
        "lock": lock.__dict__ if lock else None,
    }

    def render() -> None:
        rows = [(k, v) for k, v in data.items() if k not in ("retention", "stored_bytes")]
        rows.insert(6, ("stored", human_size(data["stored_bytes"])))
        rows += [(f"retention {k}", v) for k, v in data["retention"].items()]
        console.print(key_value_table(f"Repository {repo.name}", rows))

    emit(data, as_json, render)


@app.command("list")
def list_repos(as_json: JsonOption = False) -> None:
    """List the configured repositories."""
    repos = load_repositories(settings())
    data = {
        name: {"url": r.url, "source": r.source, "retention": r.retention.as_dict()}
        for name, r in sorted(repos.items())
    }

    def render() -> None:
        table = Table(title="Repositories", title_justify="left")
        for column in ("name", "url", "from", "window", "daily", "weekly"):
            table.add_column(column)
        for name, r in sorted(repos.items()):
            p = r.retention
            table.add_row(
                name,
                r.url,
                r.source,
                f"{p.recovery_window_days} d",
                f"{p.daily_days} d",
                f"{p.weekly_days} d",
            )
        console.print(table)

    emit(data, as_json, render)


@app.command()
def copy(
    source: Annotated[str, typer.Argument(help="Repository to copy from.")],
    destination: Annotated[str, typer.Argument(help="Repository to copy to.")],
    backup_id: Annotated[
        str | None, typer.Argument(help="Backup id or unique prefix (or use --latest).")
    ] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Copy the newest backup.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Copy a backup (with any parents it needs) and the WAL since to another repository."""
    if latest == (backup_id is not None):
        raise ConfigError("Give either a backup id or --latest.")
    src = open_repo(source)
    dst = open_repo(destination)
    wanted = src.resolve_id(backup_id or "latest")
    manifest = src.read_manifest(wanted)
    with progress_bar(f"Copying {wanted}", manifest.stored_size, enabled=not as_json) as advance:
        report = copy_to_tier(src, dst, wanted, progress=advance)

    def render() -> None:
        if report.copied:
            console.print(
                f"Copied {', '.join(report.copied)} from {src.name} to {dst.name} "
                f"({human_size(report.bytes_copied)}, every chunk verified)."
            )
        if report.already_present:
            console.print(f"Already in {dst.name}: {', '.join(report.already_present)}.")
        wal = report.wal
        if wal is not None and wal["source_has_wal"]:
            console.print(
                f"WAL: copied {wal['files_copied']} file(s) ({human_size(wal['bytes_copied'])}) "
                f"from segment {wal['from_segment']} on; {wal['files_present']} already there."
            )
        elif wal is not None:
            console.print(
                styled(
                    f"{src.name} holds no WAL, so {dst.name} can restore these backups only as "
                    "they were taken, not to a point in time.",
                    "yellow",
                )
            )

    emit(report.as_dict(), as_json, render)


def prune(
    repo_name: RepoOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be removed; remove nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Apply a repository's retention policy: remove expired backups and leftovers."""
    repo = open_repo(repo_name)
    report, wal = prune_repository(repo, dry_run=dry_run)
    data = report.as_dict() | {"retention": repo.config.retention.as_dict()}
    data["wal"] = wal.as_dict() if wal else None

    def render() -> None:
        table = Table(
            title=f"Retention in {repo.name} ({'dry run' if dry_run else 'applied'})",
            title_justify="left",
        )
        for column in ("backup", "finished (UTC)", "stored", "decision", "why"):
            table.add_column(column)
        for d in report.decisions:
            decision = "keep" if d.keep else ("would remove" if dry_run else "removed")
            table.add_row(
                d.backup_id,
                d.stop_time[:19].replace("T", " "),
                human_size(d.stored_size),
                decision,
                "; ".join(d.reasons) or "outside every retention window",
            )
        console.print(table)
        for bid in report.invalid:
            console.print(
                styled(f"{bid} fails authentication: left alone; run backup verify.", "red")
            )
        if report.incomplete_removed:
            verb = "Would remove" if dry_run else "Removed"
            console.print(
                f"{verb} {len(report.incomplete_removed)} incomplete backup(s): "
                f"{', '.join(report.incomplete_removed)}."
            )
        freed = human_size(data["freed_bytes"])
        verb = "Would free" if dry_run else "Freed"
        console.print(f"{verb} {freed} ({len(report.removed)} backup(s)).")
        if wal is not None and wal.skipped:
            console.print(styled(f"WAL: {wal.skipped}.", "red"))
        elif wal is not None:
            console.print(
                f"WAL: {verb.lower()} {human_size(wal.freed_bytes)} ({len(wal.removed)} files "
                f"before {wal.keep_from}, which no kept backup needs); kept {wal.kept_files}."
            )

    emit(data, as_json, render)
    if (failure := report.left_alone()) is not None:  # and their WAL with them
        raise failure
