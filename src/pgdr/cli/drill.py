"""``pgdr drill``: run the runbook's disaster scenarios in sandboxes; the drill history."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from pgdr.cli.common import JsonOption, settings
from pgdr.core.errors import CheckFailed, ConfigError
from pgdr.core.output import console, emit, markup, progress_bar, styled, table
from pgdr.core.records import new_record_id
from pgdr.core.units import parse_duration
from pgdr.drills import SCENARIOS, DrillOptions, drill_history, next_scheduled, run_drill
from pgdr.drills.html import drill_html, html_path
from pgdr.drills.random_run import (
    RandomDrill,
    RandomRun,
    new_seed,
    plan,
    run_random_drill,
)
from pgdr.drills.report import PHASES, RPO_TARGET_S, RTO_TARGET_S, last_per_scenario
from pgdr.drills.sandbox import kept_sandboxes, remove_sandbox
from pgdr.drills.scenarios import FAULTS
from pgdr.watch import drill_monitor

app = typer.Typer(help="Disaster drills: the runbook's scenarios end to end, RTO/RPO measured.")

VERDICT = {True: styled("PASS", "green"), False: styled("FAIL", "bold red")}


def _seconds(value: float | None) -> str:
    if value is None:
        return "not measured"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def render_drill(data: dict[str, Any]) -> None:
    """The human form of one drill report."""
    table = Table(
        title=f"Drill {data['scenario']}: {data['title']} (PostgreSQL {data['pg_version']}, "
        f"scale {data['scale']:g}) {data['id']}",
        title_justify="left",
    )
    for column in ("step", "took", "", "operator commands", "result"):
        table.add_column(column, justify="right" if column == "took" else "left")
    for step in data["steps"]:
        table.add_row(
            step["name"],
            f"{step['duration_s']:.2f} s",
            styled("ok", "green") if step["ok"] else styled("failed", "red"),
            "\n".join(step["commands"]),
            step["detail"],
        )
    console.print(table)
    rto, rpo = data["rto"], data["rpo"]
    console.print(
        f"RTO {_seconds(rto['seconds'])} (target {_seconds(rto['target_seconds'])})",
        VERDICT[bool(rto["ok"])],
        highlight=False,
    )
    phases = data["facts"].get("phases") or {}
    if any(phases.values()):
        console.print(
            "of which " + ", ".join(f"{p} {_seconds(phases[p])}" for p in PHASES if p in phases),
            highlight=False,
        )
    if rpo.get("missing_writes") is not None:
        lost = ", ".join(f"{t} {n['missing']}" for t, n in rpo["tables"].items() if n["missing"])
        console.print(
            f"RPO {rpo['missing_writes']} of {rpo['acknowledged_writes']} acknowledged writes "
            f"missing{f' ({lost})' if lost else ''}, {_seconds(rpo['seconds'])} "
            f"(target {_seconds(rpo['target_seconds'])})",
            VERDICT[bool(rpo["ok"])],
            highlight=False,
        )
    else:
        console.print("RPO not measured", VERDICT[False])
    for finding in data["findings"]:
        console.print(f"finding: {finding}", highlight=False)
    for key in ("choice",):
        if key in data["facts"]:
            console.print(f"{key}: {data['facts'][key]}", highlight=False)
    for issue in data["issues"]:
        console.print(markup("[red]issue:[/] {}", issue), highlight=False)
    where = f" (kept in {data['sandbox']})" if data["kept"] else ""
    console.print(
        Text.assemble(VERDICT[bool(data["passed"])], f": drill {data['scenario']}{where}.")
    )


ScenarioArgument = Annotated[
    str | None,
    typer.Argument(
        help="scenario1 (database loss), scenario2 (corruption), scenario3 (deletion) or all; "
        "leave it out with --random."
    ),
]
ScaleOption = Annotated[
    float, typer.Option(help="Size of the ConvoAI sample in the sandbox.", min=0.001)
]
PgVersionOption = Annotated[
    int, typer.Option("--pg-version", help="PostgreSQL major of the sandbox (18 or 15).")
]
KeepOption = Annotated[
    bool, typer.Option("--keep", help="Keep the sandbox and its servers for inspection.")
]
InjectOption = Annotated[
    str | None,
    typer.Option("--inject", help=f"Rehearse a fault as well: {', '.join(FAULTS)} (scenario 1)."),
]
RtoOption = Annotated[str, typer.Option("--rto-target", help="RTO target (the runbook: 1h).")]
RpoOption = Annotated[str, typer.Option("--rpo-target", help="RPO target (the runbook: 5m).")]
RandomOption = Annotated[
    int | None,
    typer.Option(
        "--random",
        help="Run N drills with random scenarios and disaster moments; fail if a commit older "
        "than the measured RPO is missing.",
        min=1,
    ),
]
SeedOption = Annotated[
    int | None, typer.Option("--seed", help="Seed of --random (default: a new one, printed).")
]
MaxDelayOption = Annotated[
    str,
    typer.Option("--max-delay", help="--random: longest wait under load before the disaster."),
]
MonitorIntervalOption = Annotated[
    str,
    typer.Option(
        "--monitor-interval",
        help="How often pgdr's monitor watches the sandbox (production: every 2m).",
    ),
]


@app.command()
def run(
    scenario: ScenarioArgument = None,
    scale: ScaleOption = 0.02,
    pg_version: PgVersionOption = 18,
    keep: KeepOption = False,
    inject: InjectOption = None,
    rto_target: RtoOption = "1h",
    rpo_target: RpoOption = "5m",
    random_count: RandomOption = None,
    seed: SeedOption = None,
    max_delay: MaxDelayOption = "10s",
    monitor_interval: MonitorIntervalOption = "2s",
    as_json: JsonOption = False,
) -> None:
    """Run a disaster drill in a sandbox of its own; exit 1 when it fails."""
    options = DrillOptions(
        scale=scale,
        pg_version=pg_version,
        keep=keep,
        run_id=new_record_id() if scenario == "all" else None,
        inject=inject,
        rto_target_s=parse_duration(rto_target, "--rto-target") if rto_target else RTO_TARGET_S,
        rpo_target_s=parse_duration(rpo_target, "--rpo-target") if rpo_target else RPO_TARGET_S,
        monitor_interval_s=parse_duration(monitor_interval, "--monitor-interval"),
    )
    if random_count is not None:
        if scenario is not None or inject is not None:
            raise ConfigError("--random draws the scenarios and faults: name neither.")
        drawn = plan(random_count, new_seed() if seed is None else seed, _delay(max_delay))
        _run_random(drawn, options, as_json)
        return
    if scenario is None or seed is not None:
        raise ConfigError(
            "--seed goes with --random N."
            if scenario is not None
            else "Name a scenario (scenario1, scenario2, scenario3 or all) or --random N."
        )
    reports, s = [], settings()
    for name in _drill_names(scenario, inject):
        with progress_bar(f"Drill {name}", None, enabled=not as_json) as advance:
            report = run_drill(
                name, s, options, on_step=lambda _step: advance(1), monitor=drill_monitor
            )
        reports.append(report.as_dict())
        if not as_json:
            render_drill(reports[-1])
            console.print(f"HTML report: {html_path(s.home, report.id)}", highlight=False)
    passed = all(r["passed"] for r in reports)
    if as_json:
        data: dict[str, Any] = (
            reports[0]
            if scenario != "all"
            else {"run_id": options.run_id, "passed": passed, "drills": reports}
        )
        emit(data, True, lambda: None)
    if not passed:
        failed = ", ".join(r["scenario"] for r in reports if not r["passed"])
        raise CheckFailed(f"The drill failed: {failed}; see the issues in the report.")


def _delay(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0s") else parse_duration(text, "--max-delay")


def _run_random(drawn: list[RandomDrill], options: DrillOptions, as_json: bool) -> None:
    """The drills of ``drawn`` one after the other; exit 1 when one failed."""
    s = settings()
    results = []
    for index, drill in enumerate(drawn, 1):
        title = f"Random drill {index}/{len(drawn)}: {drill.scenario} (seed {drill.seed})"
        with progress_bar(title, None, enabled=not as_json) as advance:
            results.append(
                run_random_drill(
                    index, drill, s, options, drill_monitor, on_step=lambda _step: advance(1)
                )
            )
        if not as_json:
            render_drill(results[-1].report.as_dict())
    outcome = RandomRun(drawn[0].seed, len(drawn), results)
    emit(outcome.as_dict(), as_json, lambda: _render_random(outcome))
    if not outcome.passed:
        raise CheckFailed(outcome.failure())


def _render_random(outcome: RandomRun) -> None:
    rows = []
    for r in outcome.results:
        check = r.rpo_check
        rows.append(
            [
                str(r.index),
                str(r.drill.seed),
                r.drill.scenario + (f" + {r.drill.inject}" if r.drill.inject else ""),
                f"{r.drill.delay_s:.2f} s",
                _seconds(r.report.rpo_s),
                str(check.violations) if check.checked else "not checked",
                VERDICT[r.passed],
                str(r.html),
            ]
        )
    columns = ("#", "seed", "scenario", "delay", "RPO", "older commits missing", "", "report")
    console.print(table(f"Random drills, seed {outcome.seed}", columns, rows))
    console.print(
        Text.assemble(VERDICT[outcome.passed], f": {len(outcome.results)} random drill(s).")
    )


def _drill_names(scenario: str, inject: str | None) -> list[str]:
    """The scenarios ``scenario`` names (``all``: every one); a fault only for scenario 1."""
    names = list(SCENARIOS) if scenario == "all" else [scenario]
    if scenario != "all" and scenario not in SCENARIOS:
        raise ConfigError(f"Unknown drill {scenario!r}: choose {', '.join(SCENARIOS)} or all.")
    if inject is not None and names != ["scenario1"]:
        raise ConfigError("--inject applies to scenario1 only.")
    return names


HtmlOption = Annotated[
    str | None,
    typer.Option("--html", help="Write the HTML page of drill ID (its id or record file)."),
]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", help="With --html: write the page here (default: beside the record)."),
]


@app.command()
def report(html: HtmlOption = None, out: OutOption = None, as_json: JsonOption = False) -> None:
    """The drills run so far and the next quarterly drill; exit 1 when it is overdue.

    With --html ID: write the drill's HTML report and print its path."""
    if out is not None and html is None:
        raise ConfigError("--out goes with --html ID.")
    if html is not None:
        path = drill_html(settings().home, html, out)
        emit({"html": str(path)}, as_json, lambda: console.print(str(path), highlight=False))
        return
    history = drill_history(settings().home)
    schedule = next_scheduled(history, datetime.now(UTC))
    data = _history_data(history, schedule)
    emit(data, as_json, lambda: _render_history(data))
    if schedule["overdue"]:
        raise CheckFailed(schedule["note"])


def _history_row(d: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "scenario", "started_at", "pg_version", "passed", "run_id")
    return {k: d.get(k) for k in keys} | {
        "rto_seconds": d["rto"]["seconds"],
        "rpo_seconds": d["rpo"].get("seconds"),
    }


def _history_data(history: list[dict[str, Any]], schedule: dict[str, Any]) -> dict[str, Any]:
    return {
        "drills": [_history_row(d) for d in history],
        "last": {name: _history_row(d) for name, d in last_per_scenario(history).items()},
        "schedule": schedule,
    }


def _render_history(data: dict[str, Any]) -> None:
    table_ = Table(title="Disaster drills", title_justify="left")
    for column in ("drill", "scenario", "PostgreSQL", "RTO", "RPO", "result", "run"):
        table_.add_column(column)
    for d in data["drills"]:
        table_.add_row(
            d["id"],
            d["scenario"],
            str(d["pg_version"]),
            _seconds(d["rto_seconds"]),
            _seconds(d["rpo_seconds"]),
            VERDICT[bool(d["passed"])],
            "all" if d["run_id"] else "",
        )
    console.print(table_)
    for name in SCENARIOS:
        d = data["last"].get(name)
        state = (
            Text.assemble(VERDICT[bool(d["passed"])], f" on {d['started_at'][:19]}")
            if d
            else Text("never run")
        )
        console.print(Text.assemble(f"{name}: ", state), highlight=False)
    schedule = data["schedule"]
    style = "bold red" if schedule["overdue"] else "green"
    console.print(styled(schedule["note"], style), highlight=False)


@app.command()
def clean(
    drill_id: Annotated[
        str | None, typer.Argument(help="The kept drill to remove (default: every kept one).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Stop and remove sandboxes kept with ``drill run --keep``."""
    s = settings()
    kept = kept_sandboxes(s)
    if drill_id is not None:
        kept = [p for p in kept if p.name == drill_id]
        if not kept:
            raise ConfigError(f"There is no kept drill sandbox {drill_id!r}.")
    for root in kept:
        remove_sandbox(s, root)
    data = {"removed": [p.name for p in kept]}
    emit(data, as_json, lambda: console.print(f"Removed {len(kept)} drill sandbox(es)."))
