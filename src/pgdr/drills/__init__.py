"""Disaster drills: the runbook's three disaster scenarios run end to end, RTO and RPO measured.

Each drill runs in a sandbox (sandbox.py) of its own under ``$PGDR_HOME/drills/<id>``: a new
"production" cluster with the ConvoAI sample, its own repository and key, a base backup, a real
``pgdr wal stream`` process and a workload writer (workload.py) writing the application's tables,
whose acknowledged writes make data loss a count. pgdr's own monitor (detect.py; built by
``pgdr.watch`` and handed in) detects each disaster; common.py holds detection, the decision,
restores and verification; scenarios.py, scenario2.py and scenario3.py the scenarios; report.py
the drill report, its record in ``$PGDR_HOME/records/drills`` and the quarterly schedule;
html.py renders a report as a self-contained page beside its record (timeline.py draws the
steps, timebox.py holds the runbook's time boxes per phase); random_run.py runs drills with
random scenarios and moments and holds each to its measured RPO. Nothing outside the sandbox
is touched.
"""

from pgdr.drills.report import DrillReport, drill_history, next_scheduled
from pgdr.drills.scenarios import SCENARIOS, DrillOptions, run_drill

__all__ = [
    "SCENARIOS",
    "DrillOptions",
    "DrillReport",
    "drill_history",
    "next_scheduled",
    "run_drill",
]
