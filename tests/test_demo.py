"""The README's main job, `pgdr demo`, as a user runs it on a fresh PGDR_HOME."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from conftest import run_cli
from pgdr.cluster import LocalCluster
from pgdr.config import PgdrSettings


def test_demo_runs_the_runbook_end_to_end(cli_env: dict[str, str]) -> None:
    home = Path(tempfile.mkdtemp(prefix="pgdr-demo-", dir="/tmp"))
    home.chmod(0o711)
    env = cli_env | {"PGDR_HOME": str(home)}
    try:
        result = run_cli("demo", "--scale", "0.02", env=env, timeout=600)
        assert result.code == 0, result.stdout + result.stderr
        for step in ("Encrypted base backup", "scenario1", "scenario2", "scenario3"):
            assert step in result.stdout
        assert "FAILED" not in result.stdout
        assert "Generated a new master key" in result.stderr
        listed = json.loads(run_cli("backup", "list", "--json", env=env).stdout)
        assert len(listed["backups"]) == 1
        drills = json.loads(run_cli("drill", "report", "--json", env=env).stdout)
        assert drills
        again = run_cli("demo", "--no-drills", env=env)
        assert again.code == 0 and "already loaded" in again.stdout
    finally:
        LocalCluster(home / "clusters" / "default", PgdrSettings(home=home)).destroy()
        shutil.rmtree(home, ignore_errors=True)
