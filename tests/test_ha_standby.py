"""Rebuilding a replica from the repository (``restore --as-standby``), real PostgreSQL 15.

A primary streams its WAL into a repository; a base backup is taken, rows are written after it
and their segment is completed. ``restore --as-standby`` of that backup, started, must fetch the
segment through its ``restore_command`` (the spool pgdr filled from the repository), then stream from the primary: it
appears in the primary's ``pg_stat_replication`` and replays a row written after it started. The
primary's password is not in its configuration. Promoted beside the old primary, the rebuilt
servers then make a split brain, which the streamer's choice of primary resolves or refuses
(with a P0 incident, resolved once a single primary is back).
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from conftest import run_cli
from fixtures.wal import WalEnv
from pgdr.cluster import LocalCluster
from pgdr.config import PgdrSettings
from pgdr.core.errors import RuntimeFailure
from pgdr.core.incidents import IncidentStore
from pgdr.core.severity import Severity
from pgdr.wal.server import SPLIT_BRAIN, primary_or_incident, resolve_primary

pytestmark = pytest.mark.slow


def hosts_of(*clusters: LocalCluster) -> str:
    sockets = ",".join(str(c.socket_dir) for c in clusters)
    ports = ",".join(str(c.port) for c in clusters)
    return f"host={sockets} port={ports} user=postgres dbname=postgres"


def split_brain(
    old: LocalCluster, first: LocalCluster, second: LocalCluster, incidents: IncidentStore
) -> None:
    """Promote the rebuilt standbys beside the old primary: the streamer's choice of primary
    takes the higher timeline, and refuses two primaries on the same one with a P0 incident,
    resolved once the second is stopped and a single primary is found again."""
    for cluster in (first, second):
        with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
            assert conn.execute("SELECT pg_promote(true, 60)").fetchone() == (True,)
    assert f"port={first.port}" in resolve_primary(hosts_of(old, first))
    assert f"port={first.port}" in resolve_primary(hosts_of(first, old))
    three = hosts_of(old, first, second)
    with pytest.raises(RuntimeFailure, match="split brain"):
        primary_or_incident(three, incidents)
    opened = incidents.current(SPLIT_BRAIN)
    assert opened is not None and opened.severity == Severity.P0.value, opened
    assert f":{first.port}" in opened.message and f":{second.port}" in opened.message
    second.stop()
    assert f"port={first.port}" in primary_or_incident(three, incidents)
    assert incidents.current(SPLIT_BRAIN) is None
    assert [i.open for i in incidents.all() if i.check == SPLIT_BRAIN] == [False]


def test_restore_as_standby_catches_up_from_the_repository_then_streams(
    settings: PgdrSettings, walenv15: WalEnv, scratch: Path
) -> None:
    w = walenv15
    w.start_stream()
    w.insert(5)
    backup = w.cli("backup", "--json")
    assert backup.code == 0, backup.stdout + backup.stderr
    backup_id = json.loads(backup.stdout)["id"]
    after_backup = w.insert(3)
    segment = str(w.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0])
    w.sql("SELECT pg_switch_wal()")
    w.wait_for(
        lambda: w.cli("wal", "fetch", segment, str(scratch / "probe")).code == 0,
        60,
        f"segment {segment} in the repository",
    )
    password = w.cluster.password_file.read_text().strip()
    primary = w.cluster.tcp_url(with_password=True) + "?application_name=rebuilt"
    env = w.env | {"PRIMARY_URL": primary}
    missing = w.cli("restore", backup_id, "--as-standby", "--to", str(scratch / "x"))
    assert missing.code == 2 and not (scratch / "x").exists()
    nothing = w.cli("restore", backup_id, "--as-standby", "--primary-conninfo-env", "NONE",
                    "--to", str(scratch / "x"))  # fmt: skip
    assert nothing.code == 2 and "NONE" in nothing.stderr and not (scratch / "x").exists()
    # a lone primary: no standby to back up from, one sentence, nothing stored
    no_replica = w.cli("backup", "--from", "standby")
    assert no_replica.code == 3 and "No standby is reachable" in no_replica.stderr
    assert len(json.loads(w.cli("backup", "list", "--json").stdout)["backups"]) == 1

    target = scratch / "standby"

    def rebuild(target: Path) -> LocalCluster:
        out = run_cli(
            "restore", backup_id, "--as-standby", "--primary-conninfo-env", "PRIMARY_URL",
            "--to", str(target), "--start", "--json", env=env, timeout=300,
        )  # fmt: skip
        assert out.code == 0, out.stdout + out.stderr
        data = json.loads(out.stdout)
        return LocalCluster(Path(data["cluster_dir"]), settings, data_dir=target)

    standby = rebuild(target)
    assert (target / "standby.signal").is_file()
    conf = (target / "postgresql.auto.conf").read_text()
    assert password not in conf and "passfile=" in conf and "pgdr" in conf
    assert (target / "pgdr-primary.pgpass").stat().st_mode & 0o777 == 0o600

    def replicating() -> bool:
        rows = w.sql("SELECT state FROM pg_stat_replication WHERE application_name='rebuilt'")
        return bool(rows) and rows[0][0] == "streaming"

    w.wait_for(replicating, 60, "the rebuilt standby in pg_stat_replication")
    late = w.insert(1)
    with psycopg.connect(standby.conninfo(), autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)

        def replayed() -> bool:
            rows = conn.execute("SELECT id FROM txlog").fetchall()
            return {int(r[0]) for r in rows} >= set(after_backup + late)

        w.wait_for(replayed, 30, "the rows replayed on the rebuilt standby")
    log = standby.log_file.read_text(errors="replace")
    assert f'restored log file "{segment}" from archive' in log, log[-3000:]
    # a backup of the rebuilt replica: its standby.signal is left out by a delta restore too
    both = w.env | {"DATABASE_URL": hosts_of(w.cluster, standby)}
    replica = run_cli("backup", "--from", "standby", "--json", env=both, timeout=300)
    assert replica.code == 0, replica.stdout + replica.stderr
    second = rebuild(target.with_name("second"))
    try:
        split_brain(w.cluster, standby, second, IncidentStore(scratch / "incidents"))
        delta = w.cli("restore", json.loads(replica.stdout)["id"], "--delta", "--force",
                      "--to", str(second.data_dir), "--json")  # fmt: skip
        assert delta.code == 0, delta.stdout + delta.stderr
        assert "standby.signal was left out" in delta.stdout
        assert not (second.data_dir / "standby.signal").exists()
    finally:
        standby.destroy()
        second.destroy()
