"""Which database a command works on, with the embedded default as the last resort.

``DATABASE_URL`` first, then the libpq ``PG*`` variables (``pgdr.config.configured_target``), then
the embedded default cluster under ``PGDR_HOME``, which must exist and be running.
"""

from __future__ import annotations

from collections.abc import Mapping

from pgdr.cluster.manager import default_cluster
from pgdr.cluster.registry import lost_default
from pgdr.config.settings import PgdrSettings
from pgdr.config.target import Target, configured_target
from pgdr.core.errors import RuntimeFailure


def resolve_target(
    settings: PgdrSettings, url: str | None = None, environ: Mapping[str, str] | None = None
) -> Target:
    """The target database; ``url`` (from a trusted source, never argv) wins over everything."""
    configured = configured_target(url, environ)
    if configured is not None:
        return configured
    cluster = default_cluster(settings)
    lost = lost_default(settings)
    if lost:
        raise RuntimeFailure(lost)
    if not cluster.exists:
        raise RuntimeFailure(
            "No database is configured and the embedded default does not exist yet; "
            "run `pgdr db start` or set DATABASE_URL."
        )
    if not cluster.status().running:
        raise RuntimeFailure(
            "The embedded default database is not running; start it with `pgdr db start`."
        )
    return Target(cluster.conninfo(), "embedded")
