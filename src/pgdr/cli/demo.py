"""``pgdr demo``: the README's main job on the embedded default.

Starts the embedded database, loads the ConvoAI sample (unless it is there), and checks health.
"""

from __future__ import annotations

from typing import Annotated

import psycopg
import typer

from pgdr.cli.common import console, pool_settings, progress_bar, settings
from pgdr.cluster import choose_installation, default_cluster
from pgdr.errors import CheckFailed
from pgdr.pool import check_database_health
from pgdr.sample import load_sample, scale_counts


def _has_sample(conninfo: str) -> bool:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT to_regclass('public.embeddings') IS NOT NULL").fetchone()
        return bool(row and row[0])


def demo(
    scale: Annotated[float, typer.Option(help="Sample scale for the first load.")] = 0.1,
) -> None:
    """Start the embedded database, load the ConvoAI sample, and report its health."""
    s = settings()
    cluster = default_cluster(s)
    if not cluster.exists:
        cluster.create(choose_installation(s.pg_bin, s.pg_version))
    cluster.start()
    conninfo = cluster.conninfo()
    console.print(f"Embedded PostgreSQL {cluster.status().version} at {conninfo}")
    if _has_sample(conninfo):
        console.print("ConvoAI sample already loaded.")
    else:
        with progress_bar("Loading ConvoAI sample", sum(scale_counts(scale).values())) as advance:
            report = load_sample(conninfo, scale=scale, progress=lambda _t, n: advance(n))
        console.print(
            f"Loaded {sum(report.rows.values()):,} rows in {report.load_seconds:.1f} s "
            f"({report.database_bytes / 1e6:,.1f} MB)."
        )
    health = check_database_health(conninfo, pool_settings(s).settings)
    if not health.healthy:
        raise CheckFailed(f"The embedded database is unhealthy: {health.error}")
    console.print(f"[green]healthy[/] latency {health.latency_ms} ms")
