"""A restore killed while --force swaps directories never costs the previous data directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pgdr.restore.staging import remove_stale


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_replaced_directory_goes_back_when_its_target_is_missing(tmp_path: Path) -> None:
    pid = _dead_pid()
    aside = tmp_path / f".data.pgdr-replaced-{pid}"
    aside.mkdir()
    (aside / "PG_VERSION").write_text("18\n")
    new = tmp_path / f".data.pgdr-restore-{pid}"
    new.mkdir()

    removed = remove_stale(tmp_path)

    assert (tmp_path / "data" / "PG_VERSION").read_text() == "18\n"  # put back, not removed
    assert removed == [new]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_replaced_directory_is_removed_once_the_new_one_is_in_place(tmp_path: Path) -> None:
    pid = _dead_pid()
    (tmp_path / "data").mkdir()
    aside = tmp_path / f".data.pgdr-replaced-{pid}"
    aside.mkdir()

    assert remove_stale(tmp_path) == [aside]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
