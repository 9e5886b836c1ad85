"""``pgdr reembed``: regenerate embeddings (resumable, shared by workers); ``status`` shows jobs."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from pgdr.cli.common import JsonOption, settings, subcommand_named
from pgdr.cli.database import target
from pgdr.core.output import console, emit, escape, progress_bar
from pgdr.embeddings import ReembedOptions, ReembedReport, load_embedding_settings
from pgdr.embeddings.jobs import job_statuses
from pgdr.embeddings.run import profile_sources, require_finished, save_caches
from pgdr.embeddings.run import reembed as run_reembed
from pgdr.pool import connect
from pgdr.profile import load_profile

app = typer.Typer(help="Regenerate embeddings: fast, resumable, only what needs it.")


class IndexPolicy(StrEnum):
    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


SourceOption = Annotated[
    str, typer.Option(help="A profile embedding source (embeddings, knowledge_base) or all.")
]
ChatbotOption = Annotated[
    str | None, typer.Option(help="Only this group (chatbot id) of each source.")
]
MissingOnlyOption = Annotated[
    bool, typer.Option("--missing-only", help="Only rows whose vector is NULL.")
]
WorkersOption = Annotated[int, typer.Option(help="Batches in flight in this process.")]
BatchRowsOption = Annotated[int, typer.Option(help="Rows per batch (per commit).")]
NoCacheOption = Annotated[
    bool, typer.Option("--no-cache", help="Neither read nor fill the content-hash cache.")
]
SaveCacheOption = Annotated[
    bool,
    typer.Option(
        "--save-cache",
        help="Only copy the existing vectors into the cache (no API calls), then stop.",
    ),
]
DropIndexesOption = Annotated[
    IndexPolicy,
    typer.Option(help="Drop vector indexes and rebuild them at the end (auto: >= half)."),
]
MaintenanceMemOption = Annotated[
    str, typer.Option(help="maintenance_work_mem for rebuilding vector indexes.")
]
ProfileOption = Annotated[
    str | None, typer.Option("--profile", help="Profile name or file (default PGDR_PROFILE).")
]


@app.callback(invoke_without_command=True)
def reembed(
    ctx: typer.Context,
    source: SourceOption = "all",
    chatbot: ChatbotOption = None,
    missing_only: MissingOnlyOption = False,
    workers: WorkersOption = 2,
    batch_rows: BatchRowsOption = 1000,
    no_cache: NoCacheOption = False,
    save_cache_: SaveCacheOption = False,
    drop_indexes: DropIndexesOption = IndexPolicy.AUTO,
    maintenance_work_mem: MaintenanceMemOption = "1GB",
    profile_name: ProfileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Re-embed the profile's sources; run it again after a crash to resume where it stopped."""
    if subcommand_named(ctx):
        return
    profile = load_profile(profile_name or settings().profile)
    names = profile_sources(profile, source)
    conninfo = target().conninfo
    emb_settings = load_embedding_settings()
    if save_cache_:
        _render_saved(save_caches(conninfo, profile, names, emb_settings.model), as_json)
        return
    options = ReembedOptions(
        sources=names,
        group=chatbot,
        missing_only=missing_only,
        workers=workers,
        batch_rows=batch_rows,
        use_cache=not no_cache,
        drop_indexes=drop_indexes.value,
        maintenance_work_mem=maintenance_work_mem,
    )
    report = run_reembed(
        conninfo,
        profile,
        options,
        emb_settings,
        lambda total: progress_bar("Re-embedding", total, enabled=not as_json),
    )
    emit(report.as_dict(), as_json, lambda: _render_report(report))
    require_finished(report)


def _render_report(report: ReembedReport) -> None:
    table = Table(title=f"Re-embedding with {report.model}")
    for col in ("source", "job", "rows", "written", "cache hits", "sent", "failed", "gone"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for s in report.sources:
        job = f"{s.job_id}{' (resumed)' if s.resumed else ''}"
        table.add_row(
            s.source,
            job,
            f"{s.total_rows:,}",
            f"{s.written:,}",
            f"{s.cache_hits:,}",
            f"{s.api_inputs:,}",
            f"{s.failed:,}",
            f"{s.gone:,}",
        )
    console.print(table)
    p = report.provider
    console.print(
        f"{p['requests']:,} API requests ({p['retries']} retries) in "
        f"{report.wall_seconds:.1f} s; database {report.db_seconds:.1f} s over "
        f"{report.workers} workers."
    )
    _render_verification(report.verification)


def _render_verification(rows: list[dict[str, Any]]) -> None:
    table = Table(title="Verification (missing = required by the profile and still NULL)")
    for col in ("table_name", "total", "with_embedding", "missing", "not_required"):
        table.add_column(col, justify="left" if col == "table_name" else "right")
    for v in rows:
        table.add_row(
            str(v["table_name"]),
            *(f"{v[c]:,}" for c in ("total", "with_embedding", "missing", "not_required")),
        )
    console.print(table)
    for v in rows:
        for cause in v.get("by_cause", []):
            console.print(escape(cause["sentence"]), highlight=False)


def _render_saved(results: list[dict[str, Any]], as_json: bool) -> None:
    def render() -> None:
        for r in results:
            console.print(
                f"{r['source']}: {r['added']:,} vectors added to the cache for {r['model']} "
                f"({r['cached_for_model']:,} cached in all)."
            )

    emit({"saved": results}, as_json, render)


@app.command()
def status(
    limit: Annotated[int, typer.Option(help="How many recent jobs to show.")] = 10,
    as_json: JsonOption = False,
) -> None:
    """Progress, rate, ETA and failures of the recent re-embedding jobs."""
    with connect(target().conninfo, autocommit=True) as conn:
        jobs = job_statuses(conn, limit)

    def render() -> None:
        if not jobs:
            console.print("No re-embedding jobs in this database.")
            return
        table = Table(title="Re-embedding jobs")
        for col in ("job", "source", "state", "done", "failed", "rate", "ETA", "indexes"):
            table.add_column(col, justify="left" if col in ("source", "state") else "right")
        for j in jobs:
            table.add_row(
                str(j.id),
                j.source,
                j.state,
                f"{j.done_rows:,}/{j.total_rows:,}",
                f"{j.failed:,}",
                f"{j.rows_per_second:,.0f}/s" if j.rows_per_second else "-",
                f"{j.eta_seconds:,.0f} s" if j.eta_seconds is not None else "-",
                f"{j.indexes_to_rebuild} to rebuild" if j.indexes_to_rebuild else "-",
            )
        console.print(table)
        for j in jobs:
            for f in j.failures:
                console.print(f"job {j.id} row {f['key']} ({f['group']}): {f['reason']}")

    emit({"jobs": [j.as_dict() for j in jobs]}, as_json, render)
