"""S3 repositories against a real SeaweedFS server: backup, restore, wrong credentials, and the
server stopped in the middle of an upload."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import boto3

from conftest import Server, run_cli
from fixtures.s3 import S3Server, start_s3_server

BUCKET = "pgdr-tests"


def _env(backup_env: dict[str, str], s3: S3Server, prefix: str) -> dict[str, str]:
    return backup_env | s3.env() | {"PGDR_REPO": f"s3://{BUCKET}/{prefix}"}


def test_s3_backup_verify_restore(
    server: Server, s3_server: S3Server, backup_env: dict[str, str], scratch: Path
) -> None:
    env = _env(backup_env, s3_server, f"{server.major}-{scratch.name}")
    env["DATABASE_URL"] = server.cluster.conninfo()
    init = run_cli("repo", "init", env=env)
    assert init.code == 0, init.stderr
    taken = run_cli("backup", "--json", env=env)
    assert taken.code == 0, taken.stderr
    backup = json.loads(taken.stdout)
    listed = json.loads(run_cli("backup", "list", "--json", env=env).stdout)
    assert [b["id"] for b in listed["backups"]] == [backup["id"]]
    assert listed["url"].startswith(f"s3://{BUCKET}/")
    verify = run_cli("backup", "verify", env=env)
    assert verify.code == 0, verify.stdout + verify.stderr
    target = scratch / "restored"
    restored = run_cli("restore", "latest", "--to", str(target), "--json", env=env)
    assert restored.code == 0, restored.stderr
    assert (target / "PG_VERSION").read_text().strip() == str(server.major)
    info = json.loads(run_cli("repo", "info", "--json", env=env).stdout)
    assert info["backups"] == 1 and info["lock"] is None


def test_s3_wrong_credentials(
    s3_server: S3Server, backup_env: dict[str, str], pg18: Server
) -> None:
    env = _env(backup_env, s3_server, "wrong-creds")
    env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    env["DATABASE_URL"] = pg18.cluster.conninfo()
    result = run_cli("backup", env=env)
    assert result.code == 2
    assert "refused the credentials" in result.stderr
    assert "not-the-secret" not in result.stderr + result.stdout


def test_s3_server_stopped_mid_upload(
    pg18: Server, backup_env: dict[str, str], scratch: Path, pgdr_home: Path
) -> None:
    s3 = start_s3_server(pgdr_home)
    try:
        toml = scratch / "pgdr.toml"
        toml.write_text(f'[repositories.primary]\nurl = "s3://{BUCKET}/mid"\nchunk_size_mb = 1\n')
        env = {k: v for k, v in backup_env.items() if k != "PGDR_REPO"} | s3.env()
        env |= {"PGDR_CONFIG": str(toml), "DATABASE_URL": pg18.cluster.conninfo()}
        assert run_cli("repo", "init", env=env).code == 0
        first = run_cli("backup", "--json", env=env)
        assert first.code == 0, first.stderr
        first_id = json.loads(first.stdout)["id"]

        client = boto3.client(
            "s3",
            endpoint_url=s3.endpoint,
            aws_access_key_id=s3.access_key,
            aws_secret_access_key=s3.secret_key,
            region_name="us-east-1",
        )

        def stop_after_some_chunks() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                listing = client.list_objects_v2(Bucket=BUCKET, Prefix="mid/backups/")
                chunks = [
                    o["Key"]
                    for o in listing.get("Contents", [])
                    if "/chunks/" in o["Key"] and first_id not in o["Key"]
                ]
                if len(chunks) >= 3:
                    s3.stop()
                    return
                time.sleep(0.02)

        stopper = threading.Thread(target=stop_after_some_chunks)
        stopper.start()
        second = run_cli("backup", env=env, timeout=300)
        stopper.join()
        assert second.code == 3, second.stdout + second.stderr
        message = " ".join(second.stderr.split())
        assert "after 5 attempts" in message  # retried, then a clear error
        assert "was abandoned and earlier backups are intact" in message
        assert "Traceback" not in second.stderr

        s3.start(new_ports_if_taken=True)
        env |= s3.env()
        listed = json.loads(run_cli("backup", "list", "--json", env=env).stdout)
        assert [b["id"] for b in listed["backups"]] == [first_id]
        third = run_cli("backup", "--json", env=env)
        assert third.code == 0, third.stderr
        info = json.loads(run_cli("repo", "info", "--json", env=env).stdout)
        assert info["incomplete"] == [] and info["backups"] == 2
        restored = run_cli("restore", first_id, "--to", str(scratch / "r"), env=env)
        assert restored.code == 0, restored.stderr
    finally:
        s3.stop()
