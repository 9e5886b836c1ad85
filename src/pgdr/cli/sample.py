"""``pgdr sample``: the ConvoAI demo data."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pgdr.cli.common import JsonOption
from pgdr.cli.database import target
from pgdr.core.output import console, emit, progress_bar
from pgdr.sample import VectorType, load_sample, scale_counts

app = typer.Typer(help="ConvoAI reference schema and demo data.", no_args_is_help=True)


@app.command()
def load(
    scale: Annotated[
        float, typer.Option(help="1 is about 100 MB; 0.01 is a quick test set.")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same rows.")] = 42,
    vector_type: Annotated[
        VectorType, typer.Option(help="pgvector, or real[] for servers without it.")
    ] = VectorType.VECTOR,
    no_vector_indexes: Annotated[
        bool, typer.Option("--no-vector-indexes", help="Skip the HNSW indexes.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Drop and reload existing ConvoAI tables.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create the ConvoAI schema and fill it deterministically via COPY."""
    total = sum(scale_counts(scale).values())
    with progress_bar("Loading ConvoAI sample", total, enabled=not as_json) as advance:
        report = load_sample(
            target().conninfo,
            scale=scale,
            seed=seed,
            vector_type=vector_type,
            force=force,
            vector_indexes=not no_vector_indexes,
            progress=lambda _table, n: advance(n),
        )

    def render() -> None:
        table = Table(title=f"ConvoAI sample (scale {scale}, seed {seed})")
        table.add_column("table")
        table.add_column("rows", justify="right")
        for name, rows in report.rows.items():
            table.add_row(name, f"{rows:,}")
        console.print(table)
        mb = report.database_bytes / 1e6
        console.print(
            f"Loaded in {report.load_seconds:.1f} s, indexed in {report.index_seconds:.1f} s; "
            f"database size {mb:,.1f} MB."
        )

    emit(report.as_dict(), as_json, render)
