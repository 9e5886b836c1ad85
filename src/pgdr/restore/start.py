"""Starting a restored data directory as a throwaway or new cluster.

The restored directory keeps the original server's configuration, untouched: pgdr's own
settings (a free port, a private socket directory, 127.0.0.1 only, WAL archiving off so a
restored copy never archives into the repository of the server it was copied from, and no
synchronous standby it does not have) are given on the server's command line when pgdr starts
it. The same directory started by a plain ``pg_ctl`` runs with the original configuration.

A copy that is to become the new primary (runbook scenario 1: the original is gone) is started
once with ``pgdr cluster start NAME --as-primary``: from then on pgdr no longer gives it the two
options that keep it a copy, and its own configuration decides whether it archives WAL and which
synchronous standbys commits wait for (``pgdr wal stream --synchronous`` can then make them wait).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgdr.cluster import LocalCluster, installation_for_major
from pgdr.config import PgdrSettings
from pgdr.core.connect import connect
from pgdr.core.errors import ConfigError

SAFE_OPTIONS = {"archive_mode": "off", "synchronous_standby_names": ""}


def new_cluster_dir(settings: PgdrSettings, kind: str, backup_id: str) -> Path:
    """A fresh ``$PGDR_HOME/clusters/<kind>-<backup id>[-N]`` for a restored cluster.

    ``kind`` is ``restore`` or ``pitr``; an existing directory is never reused.
    """
    base = settings.home / "clusters" / f"{kind}-{backup_id}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def adopt_restored(
    settings: PgdrSettings,
    data_dir: Path,
    pg_major: int,
    cluster_dir: Path,
    port: int | None = None,
) -> LocalCluster:
    """Make ``data_dir`` a pgdr cluster (metadata, socket and log in ``cluster_dir``)."""
    default_data = cluster_dir / "data"
    cluster = LocalCluster(
        cluster_dir,
        settings,
        data_dir=None if data_dir.resolve() == default_data.resolve() else data_dir,
    )
    installation = installation_for_major(pg_major, settings.pg_bin)
    cluster.adopt(installation, port=port, options=SAFE_OPTIONS)
    return cluster


def start_restored(
    settings: PgdrSettings, backup_id: str, data_dir: Path, pg_major: int, port: int | None
) -> dict[str, str | int]:
    """Adopt a restored directory as a new cluster and start it; where it runs."""
    cluster_dir = new_cluster_dir(settings, "restore", backup_id)
    cluster = adopt_restored(settings, data_dir, pg_major, cluster_dir, port=port)
    cluster.start()
    return {"url": cluster.conninfo(), "port": cluster.port, "cluster_dir": str(cluster_dir)}


def start_as_primary(cluster: LocalCluster) -> dict[str, Any]:
    """Start the stopped ``cluster`` as a primary: without the options that keep a restored
    copy a copy, from now on. Returns the settings it now runs with and where they come from."""
    if cluster.status().running:
        raise ConfigError(
            f"Cluster {cluster.name!r} is running; stop it first (`pgdr cluster stop "
            f"{cluster.name}`): it becomes a primary at its next start."
        )
    dropped = cluster.drop_server_options(SAFE_OPTIONS)
    notes = cluster.start()
    with connect(cluster.conninfo()) as conn:
        rows = conn.execute(
            "SELECT name, setting, source FROM pg_settings WHERE name = ANY(%s) ORDER BY name",
            (list(SAFE_OPTIONS),),
        ).fetchall()
    return {
        "name": cluster.name,
        "url": cluster.conninfo(),
        "port": cluster.port,
        "dropped_options": dropped,
        "settings": {name: {"value": value, "source": source} for name, value, source in rows},
        "notes": notes,
    }


def restart_as_primary(cluster: LocalCluster) -> dict[str, Any]:
    """Stop the restored copy ``cluster`` (just started by a restore) and start it as a primary
    (:func:`start_as_primary`): ``restore ... --as-primary``."""
    cluster.stop()
    return start_as_primary(cluster)
