"""The runbook's post-incident review as a document: drafted with the timeline, then stored.

``draft_review`` writes ``records/reviews/<incident>.md`` pre-filled with what pgdr knows (the
incident, its timeline, the runbook action) and one section per review step to be completed;
it never replaces an existing draft without ``force``. ``complete_review`` refuses a document
whose sections still hold the placeholder, stores it and marks the incident reviewed — until
then a P0/P1 incident stays "review pending".
"""

from __future__ import annotations

import os
from pathlib import Path

from pgdr.core.errors import ConfigError
from pgdr.core.severity import describe
from pgdr.core.time import utc_text
from pgdr.incident.store import REVIEW_STEPS, Incident, IncidentLog

PLACEHOLDER = "_(to be completed)_"
SECTIONS = (
    ("What happened", REVIEW_STEPS[0]),
    ("Root cause", REVIEW_STEPS[1]),
    ("Preventive measures", REVIEW_STEPS[2]),
    ("Runbook updates", REVIEW_STEPS[3]),
    ("Retrospective", REVIEW_STEPS[4]),
)


def review_document(incident: Incident) -> str:
    lines = [
        f"# Post-incident review: {incident.id}",
        "",
        f"- Severity: {describe(incident.severity)}",
        f"- Check: {incident.check} (source: {incident.source})",
        f"- Opened: {utc_text(incident.opened_at)}",
        f"- Acknowledged: {utc_text(incident.acknowledged_at)}"
        + (f" by {incident.acknowledged_by}" if incident.acknowledged_by else ""),
        f"- Resolved: {utc_text(incident.resolved_at)}",
        f"- Runbook action: {incident.action}",
        "",
        "## Timeline",
        "",
        *[
            f"- {utc_text(float(e['at']))} **{e['event']}**: {e.get('message', '')}"
            + (f" ({e['by']})" if e.get("by") else "")
            for e in incident.events
        ],
        "",
    ]
    for title, step in SECTIONS:
        lines += [f"## {title}", "", f"<!-- {step} -->", PLACEHOLDER, ""]
    return "\n".join(lines)


def _write_private(path: Path, text: str) -> None:
    """Reviews quote incident messages (which may hold query text): mode 0600, like records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def reviews_directory(incidents: IncidentLog) -> Path:
    return incidents.directory.parent / "reviews"


def draft_review(incidents: IncidentLog, ref: str, force: bool = False) -> Path:
    incident = incidents.get(ref)
    path = reviews_directory(incidents) / f"{incident.id}.md"
    if path.exists() and not force:
        raise ConfigError(
            f"{path} already exists: complete it and run `pgdr incident review {incident.id} "
            "--done`, or pass --force to draft it again."
        )
    _write_private(path, review_document(incident))
    return path


def missing_sections(text: str) -> list[str]:
    missing = []
    for title, _step in SECTIONS:
        _head, found, rest = text.partition(f"## {title}\n")
        body = rest.split("\n## ", 1)[0] if found else ""
        content = [
            line
            for line in body.splitlines()
            if line.strip() and not line.strip().startswith("<!--") and PLACEHOLDER not in line
        ]
        if not content:
            missing.append(title)
    return missing


def complete_review(incidents: IncidentLog, ref: str, source: Path | None, by: str) -> Incident:
    incident = incidents.get(ref)
    if incident.open:
        raise ConfigError(f"Incident {incident.id} is still open: resolve it before the review.")
    path = reviews_directory(incidents) / f"{incident.id}.md"
    given = source or path
    try:
        text = given.read_text()
    except OSError as exc:
        raise ConfigError(
            f"{given} cannot be read ({exc.strerror}): draft it first with "
            f"`pgdr incident review {incident.id}`."
        ) from exc
    missing = missing_sections(text)
    if missing:
        raise ConfigError(f"The review in {given} still lacks: {', '.join(missing)}.")
    if given != path:
        _write_private(path, text)
    return incidents.mark_reviewed(incident, path, by)
