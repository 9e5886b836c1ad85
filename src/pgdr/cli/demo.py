"""``pgdr demo``: the runbook end to end (``pgdr.drills.demo``), shown step by step."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pgdr.cli.common import settings
from pgdr.core.errors import CheckFailed
from pgdr.core.output import console, progress_bar, styled
from pgdr.drills.demo import DemoHooks, DemoStep, run_demo
from pgdr.watch import drill_monitor


def _started(name: str) -> None:
    console.print(styled(name, "bold"), "...")


def _finished(step: DemoStep) -> None:
    colour = "green" if step.ok else "red"
    console.print(" ", styled("ok" if step.ok else "FAILED", colour), step.detail, highlight=False)


def demo(
    scale: Annotated[float, typer.Option(help="Sample scale for the first load.")] = 0.1,
    no_drills: Annotated[
        bool, typer.Option("--no-drills", help="Skip the disaster rehearsals.")
    ] = False,
) -> None:
    """The runbook end to end: database, sample, health, integrity, backup, three disasters."""
    hooks = DemoHooks(_started, _finished, progress_bar, drill_monitor)
    steps = run_demo(settings(), scale, not no_drills, hooks)
    table = Table(title="pgdr demo")
    for column in ("step", "result", "seconds", "detail"):
        table.add_column(column)
    for step in steps:
        result = styled("ok", "green") if step.ok else styled("failed", "red")
        table.add_row(step.name, result, f"{step.seconds:.1f}", step.detail)
    console.print(table)
    failed = [step.name for step in steps if not step.ok]
    if failed:
        raise CheckFailed(f"The demo found problems in: {', '.join(failed)}.")
