"""The built wheel carries what the installed program needs at run time (not only .py files)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_wheel_ships_the_dashboard_and_data_files(tmp_path: Path) -> None:
    # with build isolation: the backend pyproject.toml asks for (setuptools>=77) builds it
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = tmp_path.glob("pgdr-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "pgdr/api/dashboard.html" in names  # GET / after `pip install`
    assert "pgdr/sample/schema.sql" in names and "pgdr/profile/convoai.toml" in names
    assert "pgdr/py.typed" in names
