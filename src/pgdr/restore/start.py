"""Starting a restored data directory as a throwaway or new cluster.

The restored directory keeps the original server's configuration; pgdr appends its own (a free
port, a private socket directory) and turns WAL archiving off, so a restored copy never archives
into the repository of the server it was copied from.
"""

from __future__ import annotations

from pathlib import Path

from pgdr.cluster import LocalCluster, installation_for_major
from pgdr.config import PgdrSettings

SAFE_CONFIG = """
# --- written by pgdr restore: a restored copy must not archive into the original's repository
archive_mode = off
"""


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
    cluster_dir.mkdir(parents=True, exist_ok=True)
    cluster_dir.chmod(0o711)
    installation = installation_for_major(pg_major, settings.pg_bin)
    conf = data_dir / "postgresql.conf"
    with conf.open("a") as handle:
        handle.write(SAFE_CONFIG)
    cluster.adopt(installation, port=port)
    cluster.log_file.touch()
    cluster.user.own(cluster.log_file, 0o600)
    return cluster


def start_restored(
    settings: PgdrSettings, backup_id: str, data_dir: Path, pg_major: int, port: int | None
) -> dict[str, str | int]:
    """Adopt a restored directory as a new cluster and start it; where it runs."""
    cluster_dir = new_cluster_dir(settings, "restore", backup_id)
    cluster = adopt_restored(settings, data_dir, pg_major, cluster_dir, port=port)
    cluster.start()
    return {"url": cluster.conninfo(), "port": cluster.port, "cluster_dir": str(cluster_dir)}
