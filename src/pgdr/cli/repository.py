"""What the commands that open a repository share: ``--repo``, opening it, its key note."""

from __future__ import annotations

from typing import Annotated

import typer

from pgdr.backup import open_repository
from pgdr.backup.repository import Repository
from pgdr.cli.common import settings
from pgdr.core.output import err_console, styled

RepoOption = Annotated[
    str | None, typer.Option("--repo", help="Repository name (default: primary).")
]


def open_repo(name: str | None, writable: bool = False) -> Repository:
    return open_repository(settings(), name, check_writable=writable)


def show_key_note(repo: Repository) -> None:
    if repo.key_note:
        err_console.print(styled(repo.key_note, "yellow"), highlight=False)
