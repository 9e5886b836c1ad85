"""``pgdr dump``: logical dumps into the repository; ``list``, ``verify`` and ``prune`` them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pgdr.backup.repository import unreadable_error
from pgdr.cli.backup import manifest_table
from pgdr.cli.check import chosen_profile
from pgdr.cli.common import JsonOption, command_group, subcommand_named
from pgdr.cli.database import target
from pgdr.cli.repository import RepoOption, open_repo, show_key_note
from pgdr.core.errors import CheckFailed, ConfigError
from pgdr.core.output import console, emit, escape, markup, progress_bar, styled
from pgdr.core.units import human_size
from pgdr.logical.dump import schema_sql, take_dump
from pgdr.logical.verify import (
    dump_summary,
    list_dumps,
    prune_dumps,
    verify_dump,
)

app = command_group(
    "Logical dumps (pg_dump) into the repository (no sub-command); list, verify, prune."
)


@app.callback()
def dump(
    ctx: typer.Context,
    schema_only: Annotated[
        bool, typer.Option("--schema-only", help="Only the schema (with --out: plain SQL).")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write plain SQL here instead (needs --schema-only)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out.")] = False,
    repo_name: RepoOption = None,
    label: Annotated[str | None, typer.Option(help="A note stored with the dump.")] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Never expire this dump (before a major change).")
    ] = False,
    jobs: Annotated[
        int, typer.Option("--jobs", help="N > 1: directory format with N parallel pg_dump jobs.")
    ] = 1,
    as_json: JsonOption = False,
) -> None:
    """Dump the target database with its own major version's pg_dump into a repository."""
    if subcommand_named(ctx):
        return
    conninfo = target().conninfo
    if out is not None:
        if not schema_only:
            raise ConfigError("--out writes plain SQL of the schema only; add --schema-only.")
        _schema_to_file(conninfo, out, force, as_json)
        return
    repo = open_repo(repo_name)
    began = time.monotonic()
    with progress_bar("Dumping", None, enabled=not as_json) as advance:
        manifest = take_dump(
            repo,
            conninfo,
            schema_only=schema_only,
            label=label,
            keep=keep,
            progress=advance,
            jobs=jobs,
        )
    duration = time.monotonic() - began
    data = dump_summary(manifest) | {"repository": repo.name, "duration_s": round(duration, 3)}
    show_key_note(repo)
    emit(
        data,
        as_json,
        lambda: console.print(
            f"Dump {manifest.id} ({manifest.kind}) of {escape(manifest.database)} "
            f"(PostgreSQL {manifest.pg_version}) stored in {repo.name}: "
            f"{human_size(manifest.stream_size)}, {human_size(manifest.stored_size)} stored, "
            f"{duration:.1f} s.",
            highlight=False,
        ),
    )


def _schema_to_file(conninfo: str, out: Path, force: bool, as_json: bool) -> None:
    data: dict[str, Any] = schema_sql(conninfo, out, force=force)
    emit(
        data,
        as_json,
        lambda: console.print(
            f"Schema of {escape(str(data['database']))} (PostgreSQL {data['pg_version']}) "
            f"written to {escape(str(out))}: {human_size(int(data['bytes']))}.",
            highlight=False,
        ),
    )


@app.command("list")
def list_command(repo_name: RepoOption = None, as_json: JsonOption = False) -> None:
    """List the complete dumps in a repository, oldest first; exit non-zero naming any that
    cannot be read (another master key, damaged)."""
    repo = open_repo(repo_name)
    dumps, unreadable = list_dumps(repo)
    data = {
        "repository": repo.name,
        "url": repo.url,
        "dumps": [dump_summary(m) for m in dumps],
        "unreadable": [d.as_dict() for d in unreadable],
    }

    def render() -> None:
        for d in unreadable:
            console.print(markup("[red]UNREADABLE[/] {}: {}", d.backup_id, d.problem))
        if dumps:
            console.print(manifest_table(f"Dumps in {repo.name}", dumps, database=True))
        elif not unreadable:
            console.print(f"The repository {repo.name} ({escape(repo.url)}) holds no dumps.")

    emit(data, as_json, render)
    if unreadable:
        raise unreadable_error(repo.name, repo.master_key.key_id, unreadable, "dump")


@app.command()
def verify(
    dump_id: Annotated[str, typer.Argument(help="Dump id, unique prefix, or 'latest'.")],
    restore_test: Annotated[
        bool,
        typer.Option(
            "--restore-test",
            help="Also restore into a throwaway cluster and run the profile's integrity check.",
        ),
    ] = False,
    profile: Annotated[str | None, typer.Option(help="Profile for the integrity check.")] = None,
    repo_name: RepoOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check every chunk and the archive's hash, list it with pg_restore; exit 1 if damaged."""
    repo = open_repo(repo_name)
    result = verify_dump(
        repo,
        dump_id,
        restore_test=restore_test,
        profile=chosen_profile(profile) if restore_test else None,
    )

    def render() -> None:
        if result["passed"]:
            test = result.get("restore_test")
            console.print(
                styled("ok", "green"),
                f"{result['dump_id']}: {result['chunks_checked']} chunks, "
                f"{result['toc_entries']} entries listed by pg_restore, "
                f"{len(result['tables'])} tables"
                + (f"; restore test: {test['detail']}" if test else "")
                + ".",
                highlight=False,
            )
        else:
            detail = result.get("problem") or result["restore_test"]["detail"]
            console.print(
                styled("FAILED", "red"), f"{result['dump_id']}: {detail}", highlight=False
            )
        for note in result["not_checked"]:
            console.print(f"not checked: {escape(note)}", highlight=False)

    emit(result, as_json, render)
    if not result["passed"]:
        raise CheckFailed(f"Dump {result['dump_id']} failed verification.")


@app.command()
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would go.")] = False,
    repo_name: RepoOption = None,
    as_json: JsonOption = False,
) -> None:
    """Expire dumps: the newest of each week for 90 days, and every --keep dump, stay (dumps,
    schema-only dumps and exports counted apart)."""
    repo = open_repo(repo_name)
    report = prune_dumps(repo, dry_run=dry_run)
    data = report.as_dict()

    def render() -> None:
        verb = "would remove" if dry_run else "removed"
        console.print(
            f"{len(report.removed)} dump(s) {verb}: "
            + (", ".join(d.backup_id for d in report.removed) or "none")
            + "."
        )
        for dump_id in report.invalid:
            console.print(styled(f"{dump_id} fails authentication: left alone.", "red"))

    emit(data, as_json, render)
    if (failure := report.left_alone()) is not None:
        raise failure
