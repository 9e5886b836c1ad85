"""Connection pools built from the runbook's settings, the health check, and pool sizing advice.

Mapping of the runbook's variables onto psycopg_pool (see docs/settings.md):

============================  =====================================================
``DB_POOL_MIN``               ``min_size``
``DB_POOL_MAX``               ``max_size``
``DB_CONNECTION_TIMEOUT`` ms  ``timeout`` (waiting for a pooled connection) and
                              libpq ``connect_timeout`` (rounded up to whole seconds,
                              at least 2, libpq's minimum)
``DB_IDLE_TIMEOUT`` ms        ``max_idle``
``DB_MAX_LIFETIME`` ms        ``max_lifetime``
============================  =====================================================
"""

from pgdr.pool.advice import PoolAdvice, advise_pool
from pgdr.pool.factory import connect, connect_kwargs, make_pool
from pgdr.pool.health import HealthReport, check_database_health

__all__ = [
    "HealthReport",
    "PoolAdvice",
    "advise_pool",
    "check_database_health",
    "connect",
    "connect_kwargs",
    "make_pool",
]
