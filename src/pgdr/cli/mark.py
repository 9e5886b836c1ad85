"""``pgdr mark NAME``: a named restore point ("before migration 005") recorded with its time."""

from __future__ import annotations

from typing import Annotated

import typer

from pgdr.backup import open_repository
from pgdr.cli.common import JsonOption
from pgdr.cli.common import settings as load_settings
from pgdr.cli.database import target as resolve_target
from pgdr.cli.repository import RepoOption
from pgdr.core.output import console, emit
from pgdr.wal.archive import repository_archive
from pgdr.wal.marks import create_mark
from pgdr.wal.server import server_info


def mark(
    name: Annotated[
        str, typer.Argument(help="The restore point's name, e.g. before-migration-005.")
    ],
    repo_name: RepoOption = None,
    force: Annotated[bool, typer.Option("--force", help="Reuse an existing name.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Create a named restore point (pg_create_restore_point) and record it with its time."""
    s = load_settings()
    conninfo = resolve_target(s).conninfo
    info = server_info(conninfo)
    repo = open_repository(s, repo_name)
    archive = repository_archive(repo, info.system_identifier, info.segment_size)
    record = create_mark(conninfo, archive, name, force=force)
    emit(
        record,
        as_json,
        lambda: console.print(
            f"Restore point {name!r} at LSN {record['lsn']}, {record['time']}; restore to it "
            f"with `pgdr restore --target-name {name} --new-cluster`."
        ),
    )
