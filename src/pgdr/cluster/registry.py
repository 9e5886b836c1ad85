"""Every cluster pgdr runs on this machine, and the record that the embedded default existed.

Clusters live in ``$PGDR_HOME/clusters/NAME`` (see :mod:`pgdr.cluster.manager`): the embedded
default, and those a restore made (``restore-ID`` for ``restore --start``, ``pitr-ID`` for a
point-in-time ``--new-cluster``/``--start``). Listing one never changes it; removing one stops
it and deletes its directory, and a data directory kept elsewhere (``restore --to DIR
--start``) only when asked, since it may be the only copy of the data.

``$PGDR_HOME/default-cluster.json`` records that pgdr once initialised the embedded default, so
that after the loss of its data ``pgdr db start`` does not silently create an empty database
where one existed (it points at the restore command instead).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgdr.cluster.installation import choose_installation, installation_for_major
from pgdr.cluster.manager import (
    DEFAULT_CLUSTER,
    ClusterStatus,
    LocalCluster,
    named_cluster,
    refuse_links,
)
from pgdr.config.settings import PgdrSettings
from pgdr.core.errors import ConfigError

DEFAULT_RECORD = "default-cluster.json"


@dataclass(frozen=True)
class ClusterEntry:
    """One row of ``pgdr cluster list``."""

    status: ClusterStatus
    adopted: bool

    def as_dict(self) -> dict[str, Any]:
        return self.status.as_dict() | {"restored": self.adopted}


def list_clusters(settings: PgdrSettings) -> list[ClusterEntry]:
    root = settings.home / "clusters"
    entries = []
    for meta in sorted(root.glob("*/cluster.json")) if root.is_dir() else []:
        cluster = named_cluster(settings, meta.parent.name)
        try:
            adopted = bool(json.loads(meta.read_text()).get("adopted"))
        except (OSError, ValueError):
            adopted = False
        entries.append(ClusterEntry(cluster.status(), adopted))
    return entries


def remove_cluster(settings: PgdrSettings, name: str, with_data: bool) -> list[str]:
    """Stop and delete cluster ``name``; returns the directories deleted."""
    if name == DEFAULT_CLUSTER:
        raise ConfigError("The embedded default is removed with `pgdr db destroy`.")
    cluster = named_cluster(settings, name)
    refuse_links(cluster.directory)
    inside = cluster.data_dir.resolve().is_relative_to(cluster.directory.resolve())
    outside = with_data and not inside and cluster.data_dir.exists()
    if outside and cluster.data_dir.resolve() != cluster.data_dir:
        raise ConfigError(
            f"The data directory {cluster.data_dir} of cluster {name!r} is now reached through "
            f"a symbolic link (it leads to {cluster.data_dir.resolve()}); nothing was removed: "
            "remove it by hand, or run `pgdr cluster rm` without --with-data."
        )
    if cluster.status().running:
        cluster.stop(mode="fast")
    removed = [str(cluster.directory)]
    if outside:  # before the record: a record left by a kill still names the data to remove
        shutil.rmtree(cluster.data_dir)
        removed.append(str(cluster.data_dir))
    cluster.destroy()
    return removed


def record_default(cluster: LocalCluster) -> None:
    """Note that pgdr initialised the embedded default here."""
    record = cluster.settings.home / DEFAULT_RECORD
    record.write_text(
        json.dumps({"created_at": time.time(), "data_dir": str(cluster.data_dir)}, indent=2)
    )


def lost_default(settings: PgdrSettings) -> str | None:
    """When pgdr initialised the embedded default and its data is gone: what to do instead of
    initialising an empty one (one sentence); otherwise None."""
    record = settings.home / DEFAULT_RECORD
    directory = settings.home / "clusters" / DEFAULT_CLUSTER
    data_dir = directory / "data"
    existed = record.is_file() or (directory / "cluster.json").is_file()
    if not existed or (data_dir / "PG_VERSION").is_file():
        return None
    try:
        created = float(json.loads(record.read_text())["created_at"])
        when = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OSError, ValueError, KeyError, TypeError):
        when = "an earlier day"
    first = ""
    if data_dir.is_dir() and any(data_dir.iterdir()):  # a removal that was stopped half-way
        first = "finish removing what is left of it with `pgdr db destroy --yes`, then "
    return (
        f"The embedded database pgdr created on {when} is gone from {data_dir}; {first}restore "
        f"it with `pgdr restore --latest --to {data_dir}` (or `pgdr restore latest --to "
        f"{data_dir}` from a base backup alone), then `pgdr db start` "
        "(`pgdr db start --new` creates an empty database instead)."
    )


def prepare_default(
    cluster: LocalCluster, port: int | None, pg_version: int | None, checksums: bool, new: bool
) -> bool:
    """Make the embedded default ready to start; True when an empty one was created now.

    A data directory restored into its place without the cluster record is taken over; where
    pgdr created one before and the data is gone, it refuses (one sentence naming the restore
    command) unless ``new``.
    """
    if cluster.exists:
        return False
    s = cluster.settings
    version_file = cluster.data_dir / "PG_VERSION"
    if not cluster.meta_file.is_file() and version_file.is_file():
        major = int(version_file.read_text().strip())
        cluster.adopt(installation_for_major(major, s.pg_bin), port=port)
        return False
    lost = lost_default(s)
    if lost and not new:
        raise ConfigError(lost)
    cluster.create(choose_installation(s.pg_bin, pg_version or s.pg_version), port, checksums)
    record_default(cluster)
    return True
