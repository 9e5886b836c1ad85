"""File and object digests: pieces per chunk, computed in any order or as one stream, agree;
manifests of the legacy scheme (SHA-256, written before there were two) still verify and
restore."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path

import pytest

from conftest import Server
from pgdr.backup import Repository
from pgdr.backup.chunks import DamagedBackup
from pgdr.backup.digest import LEGACY, PIECES, FileDigest, combine, digest_of_file, piece_digest
from pgdr.backup.take import take_backup
from pgdr.backup.verify import verify_backup
from pgdr.restore import restore_backup
from pgdr.restore.delta import delta_restore

CHUNK = 1000


def _by_pieces(data: bytes, offset: int) -> str:
    """What the parallel backup computes: a digest per chunk-bounded piece, combined."""
    pieces = []
    at = offset
    while at < offset + len(data) or not pieces:
        end = min(offset + len(data), (at // CHUNK + 1) * CHUNK)
        pieces.append(piece_digest(data[at - offset : end - offset]))
        at = end
    return combine(pieces)


@pytest.mark.parametrize(
    ("offset", "size"),
    [(0, 0), (512, 0), (0, 1000), (512, 488), (512, 489), (999, 1), (123, 5432), (0, 3000)],
)
def test_a_stream_and_pieces_in_any_order_agree(offset: int, size: int) -> None:
    data = random.Random(size).randbytes(size)
    expected = _by_pieces(data, offset)
    for trial in range(5):
        digest = FileDigest(PIECES, offset, CHUNK)
        rest = memoryview(data)
        rng = random.Random(trial)
        while rest:
            cut = rng.randint(1, 700)
            digest.update(rest[:cut])
            rest = rest[cut:]
        assert digest.hexdigest() == expected
    moved = FileDigest(PIECES, offset + 1, CHUNK)
    moved.update(data)
    if size >= CHUNK:  # where the chunk boundaries fall is part of the digest
        assert moved.hexdigest() != expected


def test_the_legacy_scheme_is_sha256_of_the_whole_file(tmp_path: Path) -> None:
    data = random.Random(7).randbytes(5000)
    (tmp_path / "f").write_bytes(data)
    assert digest_of_file(tmp_path / "f", FileDigest(LEGACY, 99, CHUNK)) == (
        hashlib.sha256(data).hexdigest()
    )
    assert digest_of_file(tmp_path / "f", FileDigest(PIECES, 99, CHUNK)) == _by_pieces(data, 99)
    with pytest.raises(ValueError, match="unknown digest scheme"):
        FileDigest("md5", 0, CHUNK)


def test_a_legacy_manifest_still_verifies_and_restores(
    pg18: Server, repo: Repository, scratch: Path
) -> None:
    """A backup whose manifest was written by pgdr before the pieces scheme (SHA-256 keys named
    ``sha256``, no ``digest_scheme``) authenticates, verifies and restores checking every file;
    a changed digest in it is caught."""
    manifest = take_backup(repo, pg18.cluster.conninfo(), method="files")
    assert manifest.digest_scheme == PIECES
    assert (
        '"digest_scheme": "xxh3-128-pieces"'
        in repo.store.get(repo.manifest_key(manifest.id)).decode()
    )
    restored = restore_backup(repo, manifest.id, scratch / "new").data_dir
    data_key = manifest.authenticate(repo.master_key, "test")
    legacy = dataclasses.replace(
        manifest,
        digest_scheme=LEGACY,
        chunks=[
            dataclasses.replace(
                c, digest=hashlib.sha256(repo.store.get(manifest.chunk_key(i))).hexdigest()
            )
            for i, c in enumerate(manifest.chunks)
        ],
        files=[
            dataclasses.replace(
                f, digest=hashlib.sha256((restored / f.path).read_bytes()).hexdigest()
            )
            if f.kind == "file"
            else f
            for f in manifest.files
        ],
    )
    legacy.sign_with(data_key)
    stored = json.loads(legacy.to_json())
    assert "digest_scheme" not in stored
    assert all(set(c) == {"size", "stored_size", "sha256"} for c in stored["chunks"])
    assert all("sha256" in f and "digest" not in f for f in stored["files"])
    repo.store.put(repo.manifest_key(manifest.id), legacy.to_json())

    report = verify_backup(repo, manifest.id)
    assert report.ok and report.files_checked > 100, report.as_dict()
    checked = restore_backup(repo, manifest.id, scratch / "checked", check_files=True)
    assert not any("not checked" in n for n in checked.notes)
    plain = restore_backup(repo, manifest.id, scratch / "plain")  # says what it did not check
    assert any(f"File digests not checked for backup {manifest.id}" in n for n in plain.notes)

    victim = next(f for f in stored["files"] if f["path"] == "PG_VERSION")
    victim["sha256"] = hashlib.sha256(b"something else").hexdigest()
    forged = repo.read_manifest(manifest.id)
    forged.files = [
        dataclasses.replace(f, digest=victim["sha256"]) if f.path == "PG_VERSION" else f
        for f in forged.files
    ]
    forged.sign_with(data_key)  # signed by the key holder: the digest, not the HMAC, catches it
    repo.store.put(repo.manifest_key(manifest.id), forged.to_json())
    report = verify_backup(repo, manifest.id)
    assert not report.ok and report.damaged_files == ["PG_VERSION"]


@pytest.mark.parametrize("method", ["files", "stream"])
def test_every_restore_checks_every_file(
    pg18: Server, repo: Repository, scratch: Path, method: str
) -> None:
    """A file whose bytes do not match its digest fails the plain (parallel) restore and the
    delta restore, not only ``--check-files``; nothing is left behind. The manifest here is
    re-signed by the key holder, so only the digest can catch it."""
    manifest = take_backup(repo, pg18.cluster.conninfo(), method=method)
    good = restore_backup(repo, manifest.id, scratch / "good").data_dir
    data_key = manifest.authenticate(repo.master_key, "test")
    victim = max((f for f in manifest.files if f.kind == "file"), key=lambda f: f.size)
    forged = dataclasses.replace(
        manifest,
        files=[
            dataclasses.replace(f, digest="0" * 32) if f.path == victim.path else f
            for f in manifest.files
        ],
    )
    forged.sign_with(data_key)
    repo.store.put(repo.manifest_key(manifest.id), forged.to_json())
    sentence = f"{victim.path} in backup {manifest.id} does not match its checksum."
    for check_files in (False, True):
        with pytest.raises(DamagedBackup) as caught:
            restore_backup(repo, manifest.id, scratch / "bad", check_files=check_files)
        assert caught.value.message == sentence
        assert not (scratch / "bad").exists()
    (good / victim.path).write_bytes(b"\0" * victim.size)  # the delta must rewrite it
    with pytest.raises(DamagedBackup) as caught:
        delta_restore(repo, manifest.id, good, force=True)
    assert caught.value.message == sentence
