"""A drill report as one self-contained HTML page, written beside its JSON record.

Inline CSS and an inline SVG timeline (timeline.py), no script and no external asset: the page
opens from disk in any browser, and its Content-Security-Policy forbids scripts and fetches
anyway. Every text taken from a report (step names, details, findings, issues, facts: they can
hold database text) is escaped. The page states the verdict, RTO and RPO against their targets,
each phase against the runbook's time box (timebox.py), the steps, findings and issues, and
what the drill did not check.
"""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path
from typing import Any

from pgdr.core.errors import ConfigError
from pgdr.core.records import write_text
from pgdr.drills.report import store
from pgdr.drills.timebox import PhaseTime, phase_times, seconds
from pgdr.drills.timeline import duration_text, timeline_svg

SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#1d2430}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px}
.meta{color:#5b6575}.verdict{display:inline-block;padding:2px 10px;border-radius:4px;
color:#fff;font-weight:700}.verdict.pass{background:#1f8a4c}.verdict.fail{background:#c62828}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #dde2ea;padding:4px 6px;
text-align:left;vertical-align:top}th{background:#f3f5f8}td.num,th.num{text-align:right;
white-space:nowrap}.ok{color:#1f8a4c}.failed,.over{color:#c62828;font-weight:600}
.within{color:#1f8a4c}code{font-size:12px;background:#f3f5f8;padding:0 3px;display:block;
white-space:pre-wrap;word-break:break-all}ul{padding-left:20px}li{margin:2px 0}
svg{font:11px system-ui,sans-serif;border:1px solid #dde2ea;background:#fff}
svg .label{text-anchor:end;fill:#1d2430}svg .group-name{font-weight:700;fill:#1d2430}
svg .band{fill:#fafbfc;stroke:#eef1f5}svg .box{fill:#fff6d6;fill-opacity:.55;stroke:#b38600;
stroke-dasharray:5 3}svg .box-label{fill:#8a6700}svg .axis,svg .tick{stroke:#5b6575}
svg .tick-label{fill:#5b6575;text-anchor:middle}svg .mark{stroke-width:2}
svg .disaster{stroke:#c62828}svg .recovered{stroke:#1f8a4c}svg .bar{fill:#8b95a5}
svg .bar.failed{stroke:#c62828;stroke-width:2}svg .bar.phase-disaster{fill:#d84343}
svg .bar.phase-detection{fill:#e08a1e}svg .bar.phase-decision{fill:#8e5bd0}
svg .bar.phase-restore{fill:#2f6fd6}svg .bar.phase-verification{fill:#1f8a4c}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'"


def html_path(home: Path, drill_id: str) -> Path:
    """Where the page of drill ``drill_id`` lives: beside its JSON record."""
    if not SAFE_ID.match(drill_id) or drill_id.startswith("."):
        raise ConfigError(f"{drill_id!r} is not a drill id.")
    return store(home).directory / f"{drill_id}.html"


def write_drill_html(home: Path, data: dict[str, Any], out: Path | None = None) -> Path:
    """Render the report ``data`` to ``out`` (default: beside its record); the file's path."""
    target = out if out is not None else html_path(home, str(data.get("id")))
    return write_text(target, render_html(data), force=True)


def drill_html(home: Path, ref: str, out: Path | None = None) -> Path:
    """The page of the recorded drill ``ref`` (an id or a record file), written again."""
    data, _ = store(home).load(ref)
    return write_drill_html(home, data, out)


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _list(element_id: str, items: list[str], empty: str) -> str:
    if not items:
        return f'<p id="{element_id}" class="meta">{_e(empty)}</p>'
    return f'<ul id="{element_id}">' + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def _target(measured: Any, target: Any, ok: Any, what: str) -> str:
    shown = "not measured" if measured is None else duration_text(seconds(measured))
    verdict = "within" if ok else "over"
    return (
        f'<tr id="{what.lower()}"><th>{what}</th><td class="num">{_e(shown)}</td>'
        f'<td class="num">{_e(duration_text(seconds(target)))}</td>'
        f'<td class="{verdict}">{"PASS" if ok else "FAIL"}</td></tr>'
    )


def _summary(data: dict[str, Any]) -> str:
    rto, rpo = data.get("rto", {}), data.get("rpo", {})
    rows = _target(rto.get("seconds"), rto.get("target_seconds"), rto.get("ok"), "RTO")
    rows += _target(rpo.get("seconds"), rpo.get("target_seconds"), rpo.get("ok"), "RPO")
    lost = ""
    if rpo.get("missing_ticks") is not None:
        lost = (
            f"<p>Data loss: {_e(rpo.get('missing_ticks'))} of {_e(rpo.get('acknowledged_ticks'))}"
            " acknowledged workload commits missing after the recovery.</p>"
        )
    return (
        '<h2>RTO and RPO</h2><table><tr><th></th><th class="num">measured</th>'
        '<th class="num">target</th><th></th></tr>'
        f"{rows}</table>{lost}"
    )


def _box_row(p: PhaseTime) -> str:
    box = p.box
    measured = duration_text(p.measured_s) if p.steps else "no step"
    runbook = f"{_e(box.runbook_step)}: {_e(box.label)}" if box else "no time box in the runbook"
    over = p.over_s
    if over is None:
        verdict = '<td class="meta">not compared</td>'
    elif over > 0:
        verdict = f'<td class="over">over by {_e(duration_text(over))}</td>'
    else:
        verdict = f'<td class="within">under by {_e(duration_text(-over))}</td>'
    return (
        f'<tr data-phase="{p.phase}"><td>{p.phase}</td><td class="num">{p.steps}</td>'
        f'<td class="num">{_e(measured)}</td><td>{runbook}</td>{verdict}</tr>'
    )


def _boxes(data: dict[str, Any]) -> str:
    rows = "".join(_box_row(p) for p in phase_times(data))
    return (
        "<h2>Against the runbook's time boxes</h2>"
        '<table id="boxes"><tr><th>phase</th><th>steps</th><th>measured</th>'
        f"<th>runbook</th><th></th></tr>{rows}</table>"
        "<p class=\"meta\">A phase's time is the sum of its steps' durations. Overall, the "
        "runbook's targets are RTO 1 hour and RPO 5 minutes.</p>"
    )


def _steps(data: dict[str, Any]) -> str:
    rows = []
    for index, step in enumerate(data.get("steps", []), 1):
        ok = bool(step.get("ok", False))
        commands = "".join(f"<code>{_e(c)}</code>" for c in step.get("commands", []))
        rows.append(
            f'<tr data-step="{index}"><td class="num">{index}</td>'
            f"<td>{_e(step.get('phase') or 'preparation')}</td><td>{_e(step.get('name', ''))}</td>"
            f'<td class="num">{_e(duration_text(seconds(step.get("duration_s"))))}</td>'
            f'<td class="{"ok" if ok else "failed"}">{"ok" if ok else "failed"}</td>'
            f'<td>{commands}</td><td class="detail">{_e(step.get("detail", ""))}</td></tr>'
        )
    return (
        '<h2>Steps</h2><table id="steps"><tr><th>#</th><th>phase</th><th>step</th><th>took</th>'
        "<th></th><th>operator commands</th><th>result</th></tr>" + "".join(rows) + "</table>"
    )


def _facts(data: dict[str, Any]) -> str:
    facts = data.get("facts", {})
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v if isinstance(v, str) else json.dumps(v, default=str))}"
        "</td></tr>"
        for k, v in sorted(facts.items())
    )
    return f'<h2>Facts</h2><table id="facts">{rows}</table>' if rows else ""


def not_checked(data: dict[str, Any]) -> list[str]:
    """What the drill did not check or measure, in sentences."""
    out = [
        "Every step ran unattended: the time a person needs to notice an alert, be reached and "
        "act is not in these figures, while the runbook's time boxes are a person's times.",
        "The application (its connection pool, health endpoint and users) was not part of the "
        "drill: the workload writer stood in for it.",
        f"The sandbox held the ConvoAI sample at scale {_number(data.get('scale'))}: restore "
        "time grows with the database and the WAL to replay, so this RTO holds for a database "
        "of this size.",
    ]
    for p in phase_times(data):
        if not p.steps:
            out.append(f"No step of the {p.phase} phase was recorded: its time is not measured.")
        elif p.box is None:
            out.append(f"The runbook gives no time for the {p.phase} phase of this scenario.")
    if data.get("rto", {}).get("seconds") is None:
        out.append("RTO was not measured: the drill did not reach a verified recovery.")
    if data.get("rpo", {}).get("seconds") is None:
        out.append("RPO was not measured: the drill did not count the workload's commits.")
    if not data.get("verified"):
        out.append(
            "The recovery was not verified: the steps after the first failure did not run or "
            "found problems (see the issues)."
        )
    return out


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _head(data: dict[str, Any]) -> str:
    passed = bool(data.get("passed"))
    title = f"Drill {data.get('scenario')}: {data.get('title')}"
    meta = (
        f"{data.get('id')} · PostgreSQL {data.get('pg_version')} · scale "
        f"{_number(data.get('scale'))} · started {data.get('started_at')} · finished "
        f"{data.get('finished_at')}"
        + (f" · run {data.get('run_id')}" if data.get("run_id") else "")
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{_e(title)} <span id="verdict" class="verdict {"pass" if passed else "fail"}">'
        f'{"PASS" if passed else "FAIL"}</span></h1><p class="meta">{_e(meta)}</p>'
    )


def render_html(data: dict[str, Any]) -> str:
    """The whole page for the drill report ``data`` (as ``DrillReport.as_dict`` gives it)."""
    return "".join(
        [
            _head(data),
            _summary(data),
            "<h2>Timeline</h2>",
            timeline_svg(data),
            _boxes(data),
            _steps(data),
            "<h2>Findings</h2>",
            _list("findings", [str(f) for f in data.get("findings", [])], "No finding."),
            "<h2>Issues</h2>",
            _list("issues", [str(i) for i in data.get("issues", [])], "No issue."),
            "<h2>Not checked</h2>",
            _list("not-checked", not_checked(data), ""),
            _facts(data),
            "</body></html>\n",
        ]
    )
