"""Damage, forgery and wrong keys: found by verify, refused by restore, in one sentence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import Server, run_cli
from pgdr.backup import Manifest, repository_at
from pgdr.backup.take import take_backup
from pgdr.config import PgdrSettings
from pgdr.crypto import MasterKey
from pgdr.crypto.keys import decode_key, generate_key_text

KEY = generate_key_text()


@pytest.fixture(scope="module", params=["files", "stream"])
def pristine(
    pg18: Server, settings: PgdrSettings, pgdr_home: Path, request: pytest.FixtureRequest
) -> tuple[Path, Manifest]:
    """One repository with one backup (of each kind), copied for each test that damages it."""
    path = pgdr_home / f"verify-pristine-{request.param}"
    repo = repository_at(str(path), settings)
    repo.use_master_key(MasterKey(decode_key(KEY, "test"), "test"))
    manifest = take_backup(repo, pg18.cluster.conninfo(), method=request.param)
    assert len(manifest.chunks) >= 3
    return path, manifest


@pytest.fixture
def damaged_env(
    pristine: tuple[Path, Manifest], cli_env: dict[str, str], scratch: Path
) -> tuple[dict[str, str], Path, Manifest]:
    source, manifest = pristine
    repo_path = scratch / "repo"
    shutil.copytree(source, repo_path)
    env = cli_env | {"PGDR_REPO": str(repo_path), "PGDR_ENCRYPTION_KEY": KEY}
    return env, repo_path, manifest


def _chunk(repo_path: Path, manifest: Manifest, index: int) -> Path:
    return repo_path / manifest.chunk_key(index)


def _victim(manifest: Manifest) -> tuple[int, str]:
    """A chunk index that holds at least one data file, and one such file."""
    for index in range(len(manifest.chunks)):
        for f in manifest.files:
            if f.kind == "file" and f.size > 0 and index in manifest.chunks_of(f):
                return index, f.path
    raise AssertionError("no chunk holds a file")


def test_verify_clean_backup(damaged_env: tuple[dict[str, str], Path, Manifest]) -> None:
    env, _repo, manifest = damaged_env
    result = run_cli("backup", "verify", "--json", env=env)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)["backups"][0]
    assert report["ok"] and report["backup_id"] == manifest.id
    assert report["files_checked"] == sum(1 for f in manifest.files if f.kind == "file")
    human = run_cli("backup", "verify", "--all", env=env)
    assert human.code == 0 and "ok" in human.stdout


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "delete"])
def test_damaged_chunk_is_named_by_file(
    damage: str, damaged_env: tuple[dict[str, str], Path, Manifest], scratch: Path
) -> None:
    env, repo_path, manifest = damaged_env
    index, some_file = _victim(manifest)
    chunk = _chunk(repo_path, manifest, index)
    data = chunk.read_bytes()
    if damage == "truncate":
        chunk.write_bytes(data[: len(data) // 2])
    elif damage == "bitflip":
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x10
        chunk.write_bytes(bytes(flipped))
    else:
        chunk.unlink()

    result = run_cli("backup", "verify", manifest.id, "--json", env=env)
    assert result.code == 1
    report = json.loads(result.stdout)["backups"][0]
    assert not report["ok"]
    assert report["damaged_chunks"][0]["chunk"] == index + 1
    assert some_file in report["damaged_files"]
    assert "failed verification" in result.stderr

    human = run_cli("backup", "verify", manifest.id, env=env)
    assert f"damaged file: {some_file}" in human.stdout

    target = scratch / "restored"
    restored = run_cli("restore", manifest.id, "--to", str(target), env=env)
    assert restored.code == 3
    assert f"Chunk {index + 1} of backup {manifest.id} is damaged" in restored.stderr
    assert not target.exists()
    assert not list(scratch.glob(".restored*"))


def test_forged_manifest_is_refused(
    damaged_env: tuple[dict[str, str], Path, Manifest], scratch: Path
) -> None:
    env, repo_path, manifest = damaged_env
    path = repo_path / "backups" / manifest.id / "manifest.json"
    data = json.loads(path.read_text())
    data["stop_lsn"] = "0/FFFFFFFF"
    path.write_text(json.dumps(data))
    result = run_cli("backup", "verify", manifest.id, env=env)
    assert result.code == 1
    assert "fails authentication" in result.stdout
    restored = run_cli("restore", manifest.id, "--to", str(scratch / "r"), env=env)
    assert restored.code == 3
    assert "altered or forged" in restored.stderr
    assert not (scratch / "r").exists()


def test_wrong_or_missing_key(
    damaged_env: tuple[dict[str, str], Path, Manifest], scratch: Path
) -> None:
    env, _repo, manifest = damaged_env
    wrong = env | {"PGDR_ENCRYPTION_KEY": generate_key_text()}
    result = run_cli("restore", manifest.id, "--to", str(scratch / "r"), env=wrong)
    assert result.code == 2
    assert "is not the key that protects" in result.stderr
    assert not (scratch / "r").exists()
    verify = run_cli("backup", "verify", env=wrong)
    assert verify.code == 2 and "not the key" in verify.stderr

    missing = {k: v for k, v in env.items() if k != "PGDR_ENCRYPTION_KEY"}
    missing["PGDR_ENCRYPTION_KEY_FILE"] = str(scratch / "no-such.key")
    result = run_cli("restore", manifest.id, "--to", str(scratch / "r"), env=missing)
    assert result.code == 2
    assert "cannot be read" in result.stderr


def test_restore_test_is_recorded(damaged_env: tuple[dict[str, str], Path, Manifest]) -> None:
    env, repo_path, manifest = damaged_env
    result = run_cli("backup", "verify", "--restore-test", "--json", env=env, timeout=600)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)["backups"][0]
    assert report["restore_test"]["passed"], report
    assert "pg_amcheck" in report["restore_test"]["steps"]
    records = list((repo_path / "records" / "restore-tests" / manifest.id).glob("*.json"))
    assert len(records) == 1
    shown = json.loads(run_cli("backup", "show", manifest.id, "--json", env=env).stdout)
    assert shown["restore_tests"][0]["passed"] is True
