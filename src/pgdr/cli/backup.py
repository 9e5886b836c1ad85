"""``pgdr backup``: take a base backup; ``list``, ``show`` and ``verify`` stored backups."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from pgdr.backup import Manifest
from pgdr.backup.repository import INFO_KEY, Repository, unreadable_error
from pgdr.backup.take import server_facts, take_backup
from pgdr.backup.verify import VerifyReport, backups_to_verify, verify_backup
from pgdr.cli.common import JsonOption, WorkersOption, command_group, subcommand_named
from pgdr.cli.database import target
from pgdr.cli.repository import RepoOption, open_repo, show_key_note
from pgdr.core.errors import CheckFailed, ConfigError, PgdrError
from pgdr.core.output import (
    console,
    emit,
    escape,
    key_value_table,
    markup,
    progress_bar,
    say,
    styled,
)
from pgdr.core.units import human_size
from pgdr.crypto.envelope import DEFAULT_LEVEL
from pgdr.restore.tested import restore_test as run_restore_test
from pgdr.wal.server import backup_source

app = command_group("Take base backups (no sub-command) and inspect the repository's backups.")


LabelOption = Annotated[str | None, typer.Option(help="A note stored with the backup.")]
KeepOption = Annotated[
    bool, typer.Option("--keep", help="Never expire this backup (retention skips it).")
]
IncrementalOption = Annotated[
    bool,
    typer.Option(
        "--incremental", help="Block-level incremental on the latest backup (PostgreSQL 17+)."
    ),
]
NewKeyOption = Annotated[
    bool,
    typer.Option(
        "--new-key",
        help="Seal with the key in force even though the repository's backups use another "
        "(or generate one when the key file is missing).",
    ),
]
MethodOption = Annotated[
    str,
    typer.Option(
        "--method",
        envvar="PGDR_BACKUP_METHOD",
        help="files: parallel workers read the data directory (pgdr beside the server); "
        "stream: pg_basebackup; auto: files when the data directory is readable here.",
    ),
]
CompressLevelOption = Annotated[
    int,
    typer.Option(
        "--compress-level",
        envvar="PGDR_COMPRESS_LEVEL",
        min=1,
        max=19,
        help="zstd level of the chunks: 1 is the fastest; higher ones store less at more CPU "
        "(pgBackRest's default is 3).",
    ),
]
FromOption = Annotated[
    str,
    typer.Option(
        "--from",
        help="primary, or standby: pg_basebackup from a replica of a multi-host target "
        "(docs/high-availability.md).",
    ),
]


@app.callback()
def backup(
    ctx: typer.Context,
    repo_name: RepoOption = None,
    label: LabelOption = None,
    keep: KeepOption = False,
    incremental: IncrementalOption = False,
    new_key: NewKeyOption = False,
    method: MethodOption = "auto",
    workers: WorkersOption = None,
    compress_level: CompressLevelOption = DEFAULT_LEVEL,
    source: FromOption = "primary",
    as_json: JsonOption = False,
) -> None:
    """Take a base backup of the target database into a repository."""
    if subcommand_named(ctx):
        return
    repo = open_repo(repo_name)
    conninfo, method = backup_source(target().conninfo, source, method)
    facts = server_facts(conninfo)
    began = time.monotonic()
    chosen = {"method": method}

    def on_method(name: str, note: str) -> None:
        chosen["method"] = name
        if note:
            say(note, err=True)

    with progress_bar("Backing up", facts.size_bytes, enabled=not as_json) as advance:
        manifest = take_backup(
            repo,
            conninfo,
            label=label,
            keep=keep,
            incremental=incremental,
            progress=advance,
            facts=facts,
            new_key=new_key,
            method=method,
            on_method=on_method,
            workers=workers,
            level=compress_level,
        )
    duration = time.monotonic() - began
    data = manifest.summary() | {
        "repository": repo.name,
        "duration_s": round(duration, 3),
        "method": chosen["method"],
        "from": source,
    }
    show_key_note(repo)  # on stderr, also with --json: the user must learn where the key is
    emit(data, as_json, lambda: _render_backup(manifest, repo.name, duration, chosen["method"]))


def _render_backup(manifest: Manifest, repo_name: str, duration: float, method: str) -> None:
    console.print(
        f"Backup {manifest.id} ({manifest.kind}) of PostgreSQL {manifest.pg_version} "
        f"stored in {repo_name}: {human_size(manifest.stream_size)} in "
        f"{len(manifest.chunks)} chunks, {human_size(manifest.stored_size)} stored, "
        f"{duration:.1f} s ({method})."
    )


def manifest_table(title: str, manifests: list[Manifest], *, database: bool = False) -> Table:
    """Backups or dumps (``database``: with the dumped database's name), one row each, every
    field escaped."""
    table = Table(title=title, title_justify="left")
    for column in ("id", "kind", *(("database",) if database else ()), "finished (UTC)"):
        table.add_column(column)
    for column in ("pg", "size", "stored", "keep", "label"):
        table.add_column(column)
    for m in manifests:
        row = [m.id, m.kind + (f" on {m.parent}" if m.parent else "")]
        row += [m.database] if database else []
        row += [
            m.stop_time[:19].replace("T", " "),
            m.pg_version,
            human_size(m.stream_size),
            human_size(m.stored_size),
            "yes" if m.keep else "",
            m.label or "",
        ]
        table.add_row(*[escape(v) for v in row])
    return table


@app.command("list")
def list_backups(repo_name: RepoOption = None, as_json: JsonOption = False) -> None:
    """List the complete backups in a repository, oldest first; exit non-zero naming any whose
    manifest cannot be read (another master key: 2; damaged: 3), after listing the others."""
    repo = open_repo(repo_name)
    backups, damaged = repo.scan_backups()
    data = {
        "repository": repo.name,
        "url": repo.url,
        "backups": [m.summary() for m in backups],
        "damaged": [d.as_dict() for d in damaged],
    }

    def render() -> None:
        for d in damaged:
            label = "UNREADABLE" if d.wrong_key else "DAMAGED"
            console.print(markup("[red]{}[/] {}: {}", label, d.backup_id, d.problem))
        if backups:
            console.print(manifest_table(f"Backups in {repo.name} ({repo.url})", backups))
        elif not damaged and not repo.store.exists(INFO_KEY):
            console.print(
                f"There is no repository at {repo.url} ({repo.name}): nothing was ever stored "
                "there (a first backup or `pgdr repo init` makes one; is the path right?)."
            )
        elif not damaged:
            console.print(f"The repository {repo.name} ({repo.url}) holds no backups.")

    emit(data, as_json, render)
    if damaged:
        raise unreadable_error(repo.name, repo.master_key.key_id, damaged, "backup")


@app.command()
def show(
    backup_id: Annotated[str, typer.Argument(help="Backup id, unique prefix, or 'latest'.")],
    repo_name: RepoOption = None,
    files: Annotated[bool, typer.Option("--files", help="Also list every file.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show one backup's manifest (authenticated first)."""
    repo = open_repo(repo_name)
    manifest = repo.read_manifest(repo.resolve_id(backup_id))
    tests = repo.restore_tests(manifest.id)
    data: dict[str, Any] = manifest.summary() | {"restore_tests": tests}
    if files:
        data["files"] = [f.__dict__ for f in manifest.files]

    def render() -> None:
        rows = [(k, v) for k, v in data.items() if k not in ("files", "restore_tests")]
        if tests:
            last = tests[-1]
            rows.append(
                (
                    "last restore test",
                    f"{'passed' if last['passed'] else 'FAILED'} at {last['at']} "
                    f"({last['duration_s']:.1f} s)",
                )
            )
        console.print(key_value_table(f"Backup {manifest.id}", rows))
        if files:
            table = Table(show_header=True)
            for column in ("path", "size", "digest"):
                table.add_column(column)
            for f in manifest.files:
                if f.kind == "file":
                    table.add_row(f.path, str(f.size), f.digest or "")
            console.print(table)

    emit(data, as_json, render)


@app.command()
def verify(
    backup_id: Annotated[
        str | None, typer.Argument(help="Backup id, unique prefix, or 'latest' (default).")
    ] = None,
    all_backups: Annotated[bool, typer.Option("--all", help="Verify every backup.")] = False,
    restore_test: Annotated[
        bool,
        typer.Option(
            "--restore-test",
            help="Also restore into a throwaway cluster, start it and run pg_amcheck.",
        ),
    ] = False,
    repo_name: RepoOption = None,
    as_json: JsonOption = False,
) -> None:
    """Read back every chunk and check every file; exit 1 naming each damaged file."""
    if all_backups and backup_id:
        raise ConfigError("Give a backup id or --all, not both.")
    repo = open_repo(repo_name)
    ids, reports = backups_to_verify(repo, backup_id, all_backups)
    reports += [_verify_one(repo, bid, restore_test, as_json) for bid in ids]
    data = {"repository": repo.name, "backups": [r.as_dict() for r in reports]}
    emit(data, as_json, lambda: _render_verified(reports))
    bad = [r for r in reports if not r.ok]
    if bad:
        files = sum(len(r.damaged_files) for r in bad)
        raise CheckFailed(
            f"{len(bad)} of {len(reports)} backup(s) failed verification "
            f"({files} damaged file(s)): {', '.join(r.backup_id for r in bad)}."
        )


def _verify_one(repo: Repository, bid: str, restore_test: bool, as_json: bool) -> VerifyReport:
    """Verify one backup (with a progress bar) and, when it is sound, restore-test it."""
    try:
        manifest_size = repo.read_manifest(bid, authenticate=False).stream_size
    except PgdrError:
        manifest_size = 0
    with progress_bar(f"Verifying {bid}", manifest_size, enabled=not as_json) as advance:
        report = verify_backup(repo, bid, progress=advance)
    if restore_test and report.ok:
        report.restore_test = run_restore_test(repo, bid)
        if not report.restore_test["passed"]:
            report.fail(f"restore test failed: {report.restore_test['detail']}")
    return report


def _render_verified(reports: list[VerifyReport]) -> None:
    for r in reports:
        if r.ok:
            extra = ""
            if r.restore_test:
                extra = f"; restore test passed in {r.restore_test['duration_s']:.1f} s"
            console.print(
                styled("ok", "green"),
                f"{r.backup_id}: {r.chunks} chunks, {r.files_checked} files, "
                f"{human_size(r.bytes_checked)} checked in {r.duration_s:.1f} s{extra}.",
            )
            continue
        console.print(styled("DAMAGED", "red"), f"{r.backup_id}:")
        for problem in r.problems:
            console.print(f"  {problem}", highlight=False)
        for path in r.damaged_files:
            console.print(f"  damaged file: {path}", highlight=False)
