"""Trusting a repository: concurrent writers, hostile manifests, incremental chains, missing keys.

Every case runs the real CLI against real PostgreSQL, and the lock also against SeaweedFS.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from conftest import CliResult, Server, run_cli
from fixtures.s3 import S3Server
from fixtures.wal import WalEnv
from pgdr.backup import Repository, repository_at
from pgdr.backup import repository as repository_module
from pgdr.config import PgdrSettings
from pgdr.core.errors import RuntimeFailure
from pgdr.crypto import MasterKey
from pgdr.crypto.keys import decode_key, generate_key_text
from pgdr.storage.s3 import S3Store

BUCKET = "pgdr-trust"


def _backup(env: dict[str, str], *args: str) -> str:
    taken = run_cli("backup", "--json", *args, env=env)
    assert taken.code == 0, taken.stderr
    return str(json.loads(taken.stdout)["id"])


def _start_backup(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pgdr", "backup", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _s3_env(env: dict[str, str], s3: S3Server, prefix: str) -> dict[str, str]:
    return env | s3.env() | {"PGDR_REPO": f"s3://{BUCKET}/{prefix}"}


# ----- item 2: one writer at a time ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("store", ["local", "s3"])
def test_two_concurrent_backups_never_both_write(
    store: str,
    walenv18: WalEnv,
    master_key_text: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """Rounds of two `pgdr backup` started together (20 on disk, 8 on S3): `verify --all` is
    clean every time.

    The database is a fresh, tiny cluster and each round has its own repository, so a round
    takes seconds; what matters is that both processes race for the same lock. On S3 a round
    takes twice as long (SeaweedFS answers a refused conditional write after up to 2 s), and
    the S3 lock's exclusivity itself is raced 20 times by 8 contenders in
    `test_s3_lock_has_exactly_one_holder`.
    """
    base = walenv18.env | {"PGDR_ENCRYPTION_KEY": master_key_text}
    for round_ in range(8 if store == "s3" else 20):
        if store == "s3":
            s3: S3Server = request.getfixturevalue("s3_server")
            env = _s3_env(base, s3, f"{tmp_path.name}-{round_}")
            assert run_cli("repo", "init", env=env).code == 0
        else:
            env = base | {"PGDR_REPO": str(tmp_path / f"repo-{round_}")}
        procs = [_start_backup(env), _start_backup(env)]
        results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
        codes = [code for code, _out, _err in results]
        for code, _out, err in results:
            assert code == 0 or (code == 3 and "is busy" in err), (round_, code, err)
        assert 0 in codes, results
        verify = run_cli("backup", "verify", "--all", env=env)
        assert verify.code == 0, (round_, verify.stdout, verify.stderr)
        listed = json.loads(run_cli("backup", "list", "--json", env=env).stdout)
        assert not listed["damaged"] and len(listed["backups"]) == codes.count(0)


def test_s3_lock_has_exactly_one_holder(
    s3_server: S3Server, settings: PgdrSettings, master_key_text: str, tmp_path: Path
) -> None:
    """Eight threads race for the lock of a SeaweedFS repository, 20 times: one wins each time."""
    repo = _s3_repository(s3_server, settings, master_key_text, f"lock-{tmp_path.name}", tmp_path)
    assert repo.store.conditional_writes()  # SeaweedFS honours If-None-Match: *
    for _round in range(20):
        assert len(_race_for_lock(repo, 8)) == 1
        assert repo.read_lock() is None


def test_a_held_s3_lock_is_refreshed_whatever_the_operation_does(
    s3_server: S3Server,
    settings: PgdrSettings,
    master_key_text: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a backup and a dump refreshed their lock; a copy, prune or key rotation to S3 that
    ran past 15 minutes left it looking stale to another host, which took it over: two writers.
    Now the holder's own thread refreshes it, and stops before the lock is let go; a lock
    taken over all the same fails the operation instead of being logged only."""
    repo = _s3_repository(s3_server, settings, master_key_text, f"beat-{tmp_path.name}", tmp_path)
    monkeypatch.setattr(repository_module, "LOCK_REFRESH_S", 0.2)
    with repo.locked("copy"):
        first = repo.read_lock()
        assert first is not None
        time.sleep(1.0)  # an operation that never calls refresh_lock
        later = repo.read_lock()
        assert later is not None and later.refreshed_at > first.refreshed_at
    time.sleep(0.5)  # a beat after the release would have put lock.json back
    assert repo.read_lock() is None

    # Taken over meanwhile (another host judged it stale): the operation fails, exit 3, and
    # the new holder's lock is left alone.
    lost = pytest.raises(RuntimeFailure, match="taken over by another process while prune ran")
    with lost, repo.locked("prune"):
        repo.store.delete("lock.json")
        assert repo.store.create("lock.json", b'{"host": "elsewhere"}') is not None
        time.sleep(0.6)
    assert repo.store.get("lock.json") == b'{"host": "elsewhere"}'


def _s3_repository(
    s3: S3Server, settings: PgdrSettings, master_key_text: str, prefix: str, tmp_path: Path
) -> Repository:
    """A repository on SeaweedFS under ``prefix``, its bucket made, the master key in use."""
    store = S3Store(
        BUCKET,
        prefix,
        endpoint_url=s3.endpoint,
        access_key_id=s3.access_key,
        secret_access_key=s3.secret_key,
    )
    store.prepare()
    repo = Repository(repository_at(str(tmp_path), settings).config, store, settings)
    repo.use_master_key(MasterKey(decode_key(master_key_text, "t"), "t"))
    return repo


def _race_for_lock(repo: Repository, contenders: int) -> list[int]:
    """Start ``contenders`` threads at once on ``repo.locked``; who held it.

    A holder keeps the lock until every other contender has been refused or holds it too, so
    two simultaneous holders are seen, whatever the scheduling.
    """
    holders: list[int] = []
    refused: list[int] = []
    barrier = threading.Barrier(contenders)
    settled = threading.Condition()

    def contend(n: int) -> None:
        barrier.wait()
        try:
            with repo.locked(f"test {n}"), settled:
                holders.append(n)
                settled.notify_all()
                settled.wait_for(lambda: len(holders) + len(refused) >= contenders, 60)
        except RuntimeFailure:
            with settled:
                refused.append(n)
                settled.notify_all()

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return holders


# ----- item 4: one bad manifest does not block the repository -----------------------------------
def test_bad_manifests_are_damaged_rows_and_never_latest(
    pg15: Server, backup_env: dict[str, str], tmp_path: Path, scratch: Path
) -> None:
    env = backup_env | {"DATABASE_URL": pg15.cluster.conninfo()}
    first = _backup(env)
    second = _backup(env)
    backups = Path(env["PGDR_REPO"]) / "backups"
    good = json.loads((backups / first / "manifest.json").read_text())

    def plant(backup_id: str, content: str) -> None:
        (backups / backup_id).mkdir()
        (backups / backup_id / "manifest.json").write_text(content)

    plant("29991231T000000Z-full", json.dumps(good))  # copied from another backup, future id
    plant("20000101T000000Z-full", "{not json")  # unparseable
    malformed = good | {"id": "20000102T000000Z-full", "stop_time": 5}
    plant("20000102T000000Z-full", json.dumps(malformed))  # malformed field
    forged = good | {"id": "29991231T000001Z-full"}  # forged without the key
    plant("29991231T000001Z-full", json.dumps(forged))

    listed = run_cli("backup", "list", "--json", env=env)
    assert listed.code == 3, listed.stderr  # the good ones listed, but a partial list: no pass
    assert "4 backup(s) in the repository" in listed.stderr and "cannot be read" in listed.stderr
    data = json.loads(listed.stdout)
    assert [b["id"] for b in data["backups"]] == [first, second]
    assert {d["id"] for d in data["damaged"]} == {
        "29991231T000000Z-full",
        "20000101T000000Z-full",
        "20000102T000000Z-full",
        "29991231T000001Z-full",
    }
    shown = run_cli("backup", "show", "latest", "--json", env=env)
    assert shown.code == 0 and json.loads(shown.stdout)["id"] == second
    verify = run_cli("backup", "verify", "--all", "--json", env=env)
    assert verify.code == 1, verify.stderr
    reports = {r["backup_id"]: r["ok"] for r in json.loads(verify.stdout)["backups"]}
    assert reports[first] and reports[second]
    assert not reports["20000102T000000Z-full"] and not reports["29991231T000000Z-full"]
    assert "Traceback" not in verify.stderr
    restored = run_cli("restore", "latest", "--to", str(scratch / "r"), "--json", env=env)
    assert restored.code == 0, restored.stderr
    assert json.loads(restored.stdout)["backup_id"] == second
    pruned = run_cli("prune", "--json", env=env)  # left alone, and said so: not a clean run
    assert pruned.code == 3 and "were left alone" in pruned.stderr, pruned.stderr
    assert set(json.loads(pruned.stdout)["invalid"]) >= {"20000102T000000Z-full"}
    asked = run_cli("restore", "29991231T000001Z-full", "--to", str(scratch / "f"), env=env)
    assert asked.code == 3 and "cannot be trusted" in asked.stderr
    assert not (scratch / "f").exists()


# ----- item 5: verify checks the chain a restore would use --------------------------------------
def test_verify_checks_the_whole_incremental_chain(
    pg18: Server, backup_env: dict[str, str]
) -> None:
    with psycopg.connect(pg18.cluster.conninfo(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET summarize_wal = on")
        conn.execute("SELECT pg_reload_conf()")
    env = backup_env | {"DATABASE_URL": pg18.cluster.conninfo()}
    full = _backup(env)
    incr = _backup(env, "--incremental")
    assert run_cli("backup", "verify", incr, env=env).code == 0
    chunk = sorted((Path(env["PGDR_REPO"]) / "backups" / full / "chunks").iterdir())[0]
    chunk.write_bytes(b"\0" * 64 + chunk.read_bytes()[64:])
    damaged = run_cli("backup", "verify", incr, "--json", env=env)
    assert damaged.code == 1, damaged.stderr
    report = json.loads(damaged.stdout)["backups"][0]
    assert report["chain"] == [full]
    assert any(f"parent backup {full} fails verification" in p for p in report["problems"])
    shutil.rmtree(Path(env["PGDR_REPO"]) / "backups" / full)
    gone = run_cli("backup", "verify", incr, env=env)
    assert gone.code == 1
    assert f"parent backup {full} cannot be used" in " ".join(gone.stdout.split())


# ----- item 6: a missing key is never silently regenerated --------------------------------------
def _no_key(result: CliResult, key_id: str) -> None:
    text = " ".join(result.stderr.split())
    assert result.code == 2, result.stdout + result.stderr
    assert "No master key at" in text and f"sealed with key id {key_id}" in text, text


def test_missing_master_key_is_never_created_by_reads(
    pg15: Server, cli_env: dict[str, str], scratch: Path
) -> None:
    home = scratch / "home"
    home.mkdir()
    env = cli_env | {"PGDR_HOME": str(home), "DATABASE_URL": pg15.cluster.conninfo()}
    first = run_cli("backup", "--json", env=env)
    assert first.code == 0, first.stderr
    key_id = json.loads(first.stdout)["key_id"]
    key_file = home / "keys" / "master.key"
    key_file.rename(home / "keys" / "elsewhere.key")
    for args in (
        ("backup", "verify"),
        ("restore", "latest", "--to", str(scratch / "r")),
        ("key", "show"),
        ("wal", "status"),
        ("backup",),
    ):
        _no_key(run_cli(*args, env=env), key_id)
        assert not key_file.exists(), args
    assert not (scratch / "r").exists()
    other = env | {"PGDR_ENCRYPTION_KEY": generate_key_text()}
    refused = run_cli("backup", env=other)
    assert refused.code == 2 and "not the key of the backups in the repository" in " ".join(
        refused.stderr.split()
    )
    forced = run_cli("backup", "--new-key", "--json", env=env)
    assert forced.code == 0, forced.stderr
    assert key_file.is_file() and json.loads(forced.stdout)["key_id"] != key_id
    assert "Generated a new master key" in forced.stderr
