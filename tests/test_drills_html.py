"""A drill's HTML report: rendered from a real drill, read back in real headless Chromium.

The page must show the verdict, RTO/RPO, one bar per step on the timeline grouped by phase with
the runbook's time boxes, and every text literally: a report holding ``<script>`` must not run
it nor turn it into an element.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from fixtures.browser import chromium, needs_chromium, screenshot
from pgdr.core.records import RecordStore
from pgdr.drills.html import render_html
from pgdr.drills.report import PHASES, DrillReport, Step
from pgdr.drills.timebox import RUNBOOK_BOXES, phase_times

HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


def all_phases_report(scenario: str = "scenario1") -> DrillReport:
    """A report with a step in every phase (and preparation), one failed, hostile texts."""
    r = DrillReport(scenario, "Complete database loss", 18, 0.01)
    r.steps = [
        Step("Prepare the sandbox", ["pgdr db start"], 0.0, 3.0),
        Step("Disaster: kill -9 </title><script>x()</script>", ["kill -9 1"], 3.0, 1.3, True, "",
             "disaster"),
        Step("Detect: health fails", ["pgdr health"], 4.3, 0.2, True, HOSTILE, "detection"),
        Step("Decide: restore the latest", [], 4.5, 0.01, phase="decision"),
        Step("Restore", ["pgdr restore --latest --new-cluster"], 4.51, 700.0, phase="restore"),
        Step("Verify", ["pgdr check"], 704.5, 0.6, False, "2 critical", "verification"),
    ]  # fmt: skip
    r.rto_s = 702.1
    r.rpo = {"acknowledged_ticks": 80, "missing_ticks": 2, "seconds": 0.04}
    r.findings = ["P0 incident: <b>bold</b>"]
    r.issues = ["Verify: 2 critical & more"]
    r.facts = {"backup_id": "b1", "option_a": {"note": "<i>x</i>"}}
    return r


def test_every_phase_against_its_runbook_box() -> None:
    times = {p.phase: p for p in phase_times(all_phases_report().as_dict())}
    assert list(times) == list(PHASES)
    assert times["detection"].box is not None and times["detection"].box.max_s == 300
    assert times["detection"].over_s == pytest.approx(0.2 - 300)
    restore = times["restore"]
    assert restore.box is not None and restore.box.label == "10-20 min"
    assert restore.over_s == pytest.approx(700 - 1200)
    assert times["disaster"].box is None and times["disaster"].over_s is None
    # scenario 3 has no box for detection; scenario 2 none for verification
    assert {b.phase for b in RUNBOOK_BOXES["scenario3"]} == {"decision", "restore"}
    assert "verification" not in {b.phase for b in RUNBOOK_BOXES["scenario2"]}


def test_page_escapes_every_text_and_draws_every_step() -> None:
    report = all_phases_report()
    report.steps[4].duration_s = 1300.0  # over the restore's 20 minutes
    page = render_html(report.as_dict())
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in page
    assert "onerror=&quot;window.pwned = 2&quot;" in page
    assert page.count('<rect class="bar ') == len(report.steps)
    assert 'data-phase="preparation"' in page
    for phase in PHASES:
        assert f'<rect class="bar phase-{phase} ' in page
    assert 'class="over">over by 1 min 40 s<' in page
    assert 'id="verdict" class="verdict fail">FAIL<' in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "Content-Security-Policy" in page


def test_a_report_without_phases_is_all_preparation_and_says_so() -> None:
    report = all_phases_report("scenario2")
    for step in report.steps:
        step.phase = ""
    data = report.as_dict()
    page = render_html(data)
    assert page.count('data-phase="preparation" data-step=') == len(report.steps)
    for phase in PHASES:
        assert f"No step of the {phase} phase was recorded" in page
    assert 'id="disaster-mark"' in page  # found by its name, as in records before phases


def run_drill(env: dict[str, str], scenario: str) -> dict[str, Any]:
    result = run_cli("drill", "run", scenario, "--scale", "0.01", "--json", env=env, timeout=600)
    assert result.code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def count(driver: Any, selector: str) -> int:
    from selenium.webdriver.common.by import By

    return len(driver.find_elements(By.CSS_SELECTOR, selector))


@pytest.mark.slow
@needs_chromium
def test_a_real_drills_page_in_chromium(
    cli_env: dict[str, str], pgdr_home: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    data = run_drill(cli_env, "scenario3")
    page = pgdr_home / "records" / "drills" / f"{data['id']}.html"
    assert page.is_file() and page.stat().st_mode & 0o077 == 0
    with chromium() as driver:
        driver.get(page.as_uri())
        assert driver.find_element(By.ID, "verdict").text == "PASS"
        assert driver.title.startswith("Drill scenario3: ")
        steps = data["steps"]
        assert count(driver, "#timeline rect.bar") == len(steps)
        for group in ("preparation", *PHASES):
            tagged = [s for s in steps if (s["phase"] or "preparation") == group]
            assert count(driver, f'#timeline rect.bar[data-phase="{group}"]') == len(tagged)
        assert count(driver, "#steps tr[data-step]") == len(steps)
        assert count(driver, "#timeline #disaster-mark") == 1
        assert count(driver, "#timeline #rto-mark") == 1
        assert driver.find_element(By.ID, "rto").text.endswith("PASS")
        assert count(driver, "#not-checked li") >= 3
        screenshot(driver, "drill-report.png")

    # the same drill, its steps tagged with every phase and hostile text in it, through
    # `pgdr drill report --html ID --out FILE`
    hostile = dict(data, id="hostile-" + data["id"])
    hostile["steps"] = [
        dict(s, phase=PHASES[i % len(PHASES)]) if i else dict(s, detail=HOSTILE)
        for i, s in enumerate(data["steps"])
    ]
    hostile["findings"] = [*data["findings"], HOSTILE]
    RecordStore(pgdr_home, "drill").save(hostile)
    out = tmp_path / "hostile.html"
    result = run_cli("drill", "report", "--html", hostile["id"], "--out", str(out), "--json",
                     env=cli_env)  # fmt: skip
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == {"html": str(out)}
    with chromium() as driver:
        driver.get(out.as_uri())
        assert count(driver, "script") == 0 and count(driver, "img") == 0
        assert driver.execute_script("return window.pwned === undefined")
        detail = driver.find_element(By.CSS_SELECTOR, '#steps tr[data-step="1"] td.detail')
        assert detail.text == HOSTILE
        assert HOSTILE in driver.find_element(By.ID, "findings").text
        for phase in PHASES:
            assert count(driver, f'#timeline rect.bar[data-phase="{phase}"]') >= 1
        assert count(driver, '#timeline rect.box[data-phase="restore"]') == 1
        assert count(driver, '#boxes tr[data-phase="restore"] td.within') == 1


def test_report_html_of_an_unknown_drill_is_one_sentence(cli_env: dict[str, str]) -> None:
    result = run_cli("drill", "report", "--html", "nope", env=cli_env)
    stderr = " ".join(result.stderr.split())
    assert result.code == 2 and "'nope' is neither a drill file nor the id of a saved" in stderr
    result = run_cli("drill", "report", "--out", "x.html", env=cli_env)
    assert result.code == 2 and "--out goes with --html" in result.stderr
