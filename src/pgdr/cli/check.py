"""``pgdr check``: integrity checks, snapshots and their comparison, the psql function."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pgdr.backup import open_repository
from pgdr.cli.common import JsonOption, command_group, settings, subcommand_named
from pgdr.cli.database import target
from pgdr.core.errors import CheckFailed, ConfigError
from pgdr.core.output import console, emit, escape, markup, progress_bar, styled
from pgdr.core.records import RecordStore
from pgdr.integrity import CheckOptions, Report
from pgdr.integrity.discover import profile_for
from pgdr.integrity.records import check_and_record
from pgdr.integrity.snapshot import compare_snapshot, take_snapshot
from pgdr.integrity.sqlfunc import install_sql
from pgdr.profile import Profile, load_profile
from pgdr.restore.snapshot import snapshot_of_backup

app = command_group("Integrity checks: orphans, broken embeddings, rules, storage; snapshots.")

ProfileOption = Annotated[
    str | None,
    typer.Option("--profile", help="Built-in profile name or TOML path (default: PGDR_PROFILE)."),
]
TimeoutOption = Annotated[
    float,
    typer.Option("--timeout", help="Statement timeout in seconds for each query.", min=1),
]

STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def named_profile(name: str | None) -> Profile | None:
    """The profile the user named (``--profile`` or PGDR_PROFILE), or None: discover one."""
    s = settings()
    if name is None and "profile" not in s.model_fields_set:
        return None
    return load_profile(name or s.profile)


def chosen_profile(name: str | None) -> Profile:
    """The named profile, or the one the target database's catalog gives (discover.py)."""
    return named_profile(name) or profile_for(target().conninfo).profile


def render_report(report: Report, title: str) -> None:
    """The human form of any integrity report."""
    if report.findings:
        table = Table(title=title, title_justify="left")
        for column in ("level", "severity", "check", "table", "count", "finding"):
            table.add_column(column, justify="right" if column == "count" else "left")
        for f in report.ordered():
            table.add_row(
                f.priority,
                styled(f.severity, STYLE[f.severity]),
                f.check,
                f.table or "",
                "" if f.count is None else f"{f.count:,}",
                escape(f.message + (f" e.g. {', '.join(f.samples[:3])}" if f.samples else "")),
            )
        console.print(table)
    _render_embeddings(report)
    for skipped in report.skipped:
        label = "not checked" if skipped.incomplete else "skipped"
        console.print(markup("[yellow]{}:[/] {}", label, skipped.reason), highlight=False)
    for note in report.notes:
        console.print(styled(f"note: {note}", "dim"), highlight=False)
    counts = report.counts()
    verdict = {
        "failed": styled("FAILED", "bold red"),
        "incomplete": styled("INCOMPLETE", "bold yellow"),
        "ok": styled("OK", "green"),
    }[report.status]
    console.print(
        f"{verdict}: {counts['critical']} critical, {counts['warning']} warning, "
        f"{counts['info']} info finding(s) in {report.duration_s:.2f} s.",
        highlight=False,
    )


def _render_embeddings(report: Report) -> None:
    """Per embedding source: totals, and the chatbots (groups) with the most problems."""
    codes = ("missing_vector", "wrong_dimension", "non_finite", "zero_vector")
    for src in report.sections.get("embeddings", []):
        present = [c for c in codes if c in src]
        counts = ", ".join(f"{c.replace('_', ' ')} {src[c]:,}" for c in present)
        console.print(
            f"embeddings {src['source']}: {src['with_vector']:,} of {src['rows']:,} rows have a "
            f"vector; {counts}.",
            highlight=False,
        )
        if not src.get("groups"):
            continue
        table = Table(title=f"{src['group_by']} with problems (worst first)", title_justify="left")
        for column in ("group", "rows", "with vector", *present):
            table.add_column(
                column.replace("_", " "), justify="left" if column == "group" else "right"
            )
        for group in src["groups"][:10]:
            table.add_row(
                str(group["group"]),
                f"{group['rows']:,}",
                f"{group['with_vector']:,}",
                *(f"{group.get(c, 0):,}" for c in present),
            )
        console.print(table)


def fail_on_critical(report: Report) -> None:
    """Exit 1 (after the report is printed) when anything critical was found, or when anything
    was not checked: a partial run is never a pass."""
    gaps = sum(1 for s in report.skipped if s.incomplete)
    if report.critical:
        more = f"; {gaps} thing(s) not checked" if gaps else ""
        raise CheckFailed(
            f"{report.critical} critical finding(s); highest level {report.top_priority}{more}."
        )
    if gaps:
        raise CheckFailed(
            f"INCOMPLETE: {gaps} thing(s) were not checked (listed above); this run is not a pass."
        )


@app.callback()
def check(
    ctx: typer.Context,
    profile: ProfileOption = None,
    vectors: Annotated[
        bool,
        typer.Option("--vectors", help="Read every vector: NaN, infinity and zero vectors."),
    ] = False,
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            help="First run pg_amcheck over heaps and B-trees (installs the amcheck extension "
            "if missing); damaged tables are never read.",
        ),
    ] = False,
    timeout: TimeoutOption = 300.0,
    samples: Annotated[int, typer.Option(help="Sample keys per finding.", min=0)] = 5,
    db: Annotated[
        str | None, typer.Option("--db", help="A database of pgdr.toml's \\[databases.NAME].")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run every integrity check of the profile (one pass per table); exit 1 on critical.

    Each run is recorded (the monitor's `integrity` check reads the newest record)."""
    if subcommand_named(ctx):
        return
    options = CheckOptions(vectors=vectors or deep, deep=deep, timeout_s=timeout, samples=samples)
    spec = named_profile(profile)

    with progress_bar("Checking tables", None, enabled=not as_json) as advance:
        report, path = check_and_record(settings(), db, spec, options, lambda _t: advance(1))

    def render() -> None:
        render_report(report, f"pgdr check ({report.profile})")
        console.print(f"Recorded in {escape(str(path))}.", highlight=False)

    emit(report.as_dict() | {"record": str(path)}, as_json, render)
    fail_on_critical(report)


OutputOption = Annotated[
    Path | None, typer.Option("--output", help="Write to this file instead of PGDR_HOME/records.")
]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing file.")]


@app.command()
def snapshot(
    profile: ProfileOption = None,
    output: OutputOption = None,
    force: ForceOption = False,
    timeout: TimeoutOption = 300.0,
    as_json: JsonOption = False,
) -> None:
    """Record row counts, newest created_at and key fingerprints of the profile's tables."""
    spec = chosen_profile(profile)
    report = Report("snapshot", target().redacted(), spec.name)
    data = take_snapshot(target().conninfo, spec, timeout, report)
    path = RecordStore(settings().home, "snapshot").save(data, output, force)
    data["path"] = str(path)
    data["skipped"] = [s.reason for s in report.skipped]

    def render() -> None:
        table = Table(title=f"Snapshot {data['id']}", title_justify="left")
        for column in ("table", "rows", "newest"):
            table.add_column(column, justify="right" if column == "rows" else "left")
        for name, t in data["tables"].items():
            if t.get("missing"):
                table.add_row(name, "", styled("missing", "red"))
            else:
                table.add_row(name, f"{t['rows']:,}", t["newest"] or "")
        console.print(table)
        for reason in data["skipped"]:
            console.print(markup("[yellow]skipped:[/] {}", reason), highlight=False)
        console.print(f"Saved to {path}.", highlight=False)

    emit(data, as_json, render)


SnapshotArgument = Annotated[
    str | None,
    typer.Argument(metavar="[SNAPSHOT]", help="Snapshot id or file (default: the newest)."),
]
AgainstEnvOption = Annotated[
    str | None,
    typer.Option(
        "--against-env",
        metavar="VAR",
        help="Compare with the database whose URL is in environment variable VAR.",
    ),
]
BackupRefOption = Annotated[
    str | None,
    typer.Option(
        "--backup", metavar="ID", help="Compare with a backup (an id, prefix or 'latest')."
    ),
]
BackupRepoOption = Annotated[
    str | None, typer.Option("--repo", help="Repository holding the backup.")
]


@app.command()
def compare(
    snapshot_ref: SnapshotArgument = None,
    against_env: AgainstEnvOption = None,
    backup: BackupRefOption = None,
    repo: BackupRepoOption = None,
    profile: ProfileOption = None,
    timeout: TimeoutOption = 300.0,
    as_json: JsonOption = False,
) -> None:
    """Tables whose count fell, whose newest row went back, or whose history changed."""
    spec = chosen_profile(profile)
    chosen = [x for x in (snapshot_ref, against_env, backup) if x is not None]
    if len(chosen) > 1:
        raise ConfigError("Give one of SNAPSHOT, --against-env or --backup, not several.")
    baseline = _baseline(snapshot_ref, against_env, backup, repo, spec, timeout)
    report = compare_snapshot(target().conninfo, baseline, spec, timeout)
    emit(report.as_dict(), as_json, lambda: _render_comparison(report))
    fail_on_critical(report)


def _baseline(
    snapshot_ref: str | None,
    against_env: str | None,
    backup: str | None,
    repo: str | None,
    spec: Profile,
    timeout: float,
) -> dict[str, Any]:
    """The snapshot to compare with: of a backup, of another database, or a recorded one."""
    if backup is not None:
        s = settings()
        return snapshot_of_backup(
            open_repository(s, repo), backup, target(s).conninfo, spec, timeout
        )
    if against_env is not None:
        url = os.environ.get(against_env)
        if not url:
            raise ConfigError(f"Environment variable {against_env} is not set or empty.")
        return take_snapshot(url, spec, timeout)
    baseline, _path = RecordStore(settings().home, "snapshot").load(snapshot_ref)
    return baseline


def _render_comparison(report: Report) -> None:
    base = report.sections["baseline"]
    table = Table(title=f"Compared with {base['id']} ({base['taken_at']})", title_justify="left")
    for column in ("table", "rows then", "rows now", "newest then", "newest now"):
        table.add_column(column, justify="right" if "rows" in column else "left")
    for t in report.sections["tables"]:
        before, now = t["before"], t["now"]
        table.add_row(
            t["table"],
            f"{before['rows']:,}",
            f"{now['rows']:,}",
            before.get("newest") or "",
            now.get("newest") or "",
        )
    console.print(table)
    render_report(report, "Differences")


@app.command("install-sql")
def install_sql_command(
    profile: ProfileOption = None,
    schema: Annotated[
        str,
        typer.Option(help="Schema for the function (default public: callable unqualified)."),
    ] = "public",
    vectors: Annotated[
        bool, typer.Option("--vectors", help="Also read vector contents (NaN, zero vectors).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Install check_referential_integrity() for psql users; one row per finding."""
    spec = chosen_profile(profile)
    installed = install_sql(target().conninfo, spec, schema=schema, vectors=vectors)

    def render() -> None:
        console.print(
            f"Installed {installed.function}: {installed.checks} checks over "
            f"{installed.tables} tables. Run: SELECT * FROM {installed.function};",
            highlight=False,
        )
        for reason in installed.skipped:
            console.print(markup("[yellow]not included:[/] {}", reason), highlight=False)

    emit(installed.as_dict(), as_json, render)
