"""A drill's steps as an inline SVG timeline: bars on the time axis, grouped by phase.

One row per step, rows grouped by phase (preparation first, then report.PHASES in order); a
phase the runbook gives a time box for (timebox.RUNBOOK_BOXES) shows it as a dashed frame from
the phase's first step, clipped at the chart's edge when it reaches beyond. A red line marks the
disaster, a green one the verified recovery (disaster + RTO). Every text is escaped; the styles
are the page's (html.py), the SVG carries classes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from pgdr.drills.report import PHASES
from pgdr.drills.timebox import (
    PREPARATION,
    RUNBOOK_BOXES,
    UNKNOWN,
    TimeBox,
    disaster_step,
    group_of,
    seconds,
)

WIDTH = 960
LABEL_WIDTH = 330
RIGHT_PAD = 30
ROW = 20
HEADER = 22
AXIS = 30
TOP = 8
LABEL_CHARS = 52
BOX_LABEL_WIDTH = 330
GROUPS = (PREPARATION, *PHASES, UNKNOWN)
NICE_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)


@dataclass(frozen=True)
class Scale:
    """Seconds since the drill began to x, over ``span`` seconds."""

    span: float
    left: float = LABEL_WIDTH
    right: float = WIDTH - RIGHT_PAD

    def x(self, t: float) -> float:
        return self.left + min(max(t, 0.0), self.span) / self.span * (self.right - self.left)


def duration_text(value: float) -> str:
    """Seconds as a person reads them: 0.42 s, 12.3 s, 4 min 48 s, 1 h 2 min."""
    if value < 10:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{int(value // 60)} min {int(value % 60)} s"
    return f"{int(value // 3600)} h {int(value % 3600 // 60)} min"


def _span(data: dict[str, Any]) -> float:
    steps = data.get("steps", [])
    end = max(
        (seconds(s.get("started_s")) + seconds(s.get("duration_s")) for s in steps), default=0
    )
    disaster = disaster_step(steps)
    rto = data.get("rto", {}).get("seconds")
    if disaster is not None and rto is not None:
        end = max(end, seconds(disaster.get("started_s")) + seconds(rto))
    return max(end, 1.0)


def _bar(index: int, step: dict[str, Any], group: str, y: float, scale: Scale) -> str:
    start, took = seconds(step.get("started_s")), seconds(step.get("duration_s"))
    x0 = scale.x(start)
    width = max(2.0, scale.x(start + took) - x0)
    name = str(step.get("name", ""))
    label = f"{index}. {name}"
    if len(label) > LABEL_CHARS:
        label = label[: LABEL_CHARS - 1] + "…"
    state = "ok" if step.get("ok", False) else "failed"
    return (
        f'<text class="label" x="{LABEL_WIDTH - 8}" y="{y + 14}">{escape(label)}</text>'
        f'<rect class="bar phase-{group} {state}" data-phase="{group}" data-step="{index}" '
        f'x="{x0:.1f}" y="{y + 3}" width="{width:.1f}" height="{ROW - 6}">'
        f"<title>{escape(f'{index}. {name}: {duration_text(took)}, {state}')}</title></rect>"
    )


def _box(box: TimeBox, began: float, y: float, height: float, scale: Scale) -> str:
    x0 = scale.x(began)
    reaches = began + box.max_s
    x1 = scale.x(reaches)
    clipped = reaches > scale.span
    text = f"runbook: {box.runbook_step}, {box.label}" + (" →" if clipped else "")
    # a box that begins near the right edge gets its label to the left of the edge
    anchor = (
        f'x="{x0 + 4:.1f}"'
        if x0 < scale.right - BOX_LABEL_WIDTH
        else f'x="{scale.right - 4:.1f}" text-anchor="end"'
    )
    return (
        f'<rect class="box" data-phase="{box.phase}" x="{x0:.1f}" y="{y + 2}" '
        f'width="{max(x1 - x0, 2.0):.1f}" height="{height - 4}">'
        f"<title>{escape(text)}</title></rect>"
        f'<text class="box-label" {anchor} y="{y + 15}">{escape(text)}</text>'
    )


def _group(
    group: str, members: list[tuple[int, dict[str, Any]]], box: TimeBox | None, y: float, sc: Scale
) -> str:
    height = HEADER + ROW * len(members)
    parts = [
        f'<g class="group" data-phase="{group}">',
        f'<rect class="band phase-{group}" x="0" y="{y}" width="{WIDTH}" height="{height}"/>',
        f'<text class="group-name" x="8" y="{y + 15}">{group}</text>',
    ]
    if box is not None:
        began = min(seconds(s.get("started_s")) for _, s in members)
        parts.append(_box(box, began, y, height, sc))
    for offset, (index, step) in enumerate(members):
        parts.append(_bar(index, step, group, y + HEADER + offset * ROW, sc))
    parts.append("</g>")
    return "".join(parts)


def _tick_step(span: float) -> float:
    return next((s for s in NICE_STEPS if span / s <= 10), NICE_STEPS[-1])


def _axis(scale: Scale, y: float) -> str:
    step = _tick_step(scale.span)
    parts = [f'<line class="axis" x1="{scale.left}" y1="{y}" x2="{scale.right}" y2="{y}"/>']
    count = int(scale.span / step) + 1
    for n in range(count):
        t = n * step
        x = scale.x(t)
        text = f"{t:g} s" if t < 60 else f"{t / 60:g} min" if t < 3600 else f"{t / 3600:g} h"
        parts.append(
            f'<line class="tick" x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 5}"/>'
            f'<text class="tick-label" x="{x:.1f}" y="{y + 18}">{text}</text>'
        )
    parts.append(
        f'<text class="tick-label" x="{scale.left}" y="{y + 28}" text-anchor="start">'
        "seconds since the drill began</text>"
    )
    return "".join(parts)


def _markers(data: dict[str, Any], scale: Scale, bottom: float) -> str:
    disaster = disaster_step(data.get("steps", []))
    if disaster is None:
        return ""
    at = seconds(disaster.get("started_s"))
    parts = [
        f'<line id="disaster-mark" class="mark disaster" x1="{scale.x(at):.1f}" y1="{TOP}" '
        f'x2="{scale.x(at):.1f}" y2="{bottom}"><title>the disaster</title></line>'
    ]
    rto = data.get("rto", {}).get("seconds")
    if rto is not None:
        x = scale.x(at + seconds(rto))
        title = f"verified recovery: RTO {duration_text(seconds(rto))}"
        parts.append(
            f'<line id="rto-mark" class="mark recovered" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" '
            f'y2="{bottom}"><title>{escape(title)}</title></line>'
        )
    return "".join(parts)


def timeline_svg(data: dict[str, Any]) -> str:
    """The report ``data``'s steps as an SVG chart (``<svg id="timeline">``)."""
    steps = list(enumerate(data.get("steps", []), 1))
    boxes = {b.phase: b for b in RUNBOOK_BOXES.get(str(data.get("scenario")), ())}
    scale = Scale(_span(data))
    parts, y = [], float(TOP)
    for group in GROUPS:
        members = [(i, s) for i, s in steps if group_of(s) == group]
        if members:
            parts.append(_group(group, members, boxes.get(group), y, scale))
            y += HEADER + ROW * len(members)
    parts.append(_markers(data, scale, y))
    parts.append(_axis(scale, y))
    height = y + AXIS + 6
    return (
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{height:.0f}" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
        'aria-label="the drill\'s steps on a time axis, grouped by phase">'
        + "".join(parts)
        + "</svg>"
    )
