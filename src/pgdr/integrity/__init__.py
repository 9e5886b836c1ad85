"""Integrity checks: orphans, broken embeddings, application rules, storage, snapshots.

``run_check()`` is ``pgdr check``: one aggregate pass per table (plan.py) built from the profile
and the catalog (catalog.py), findings with severities and P-levels (findings.py), storage checks
(storage.py). Snapshots and their comparison live in snapshot.py, pre-migration inventories in
inventory.py, the psql-callable ``pgdr.check_referential_integrity()`` in sqlfunc.py, and where
pgdr keeps these records in records.py.
"""

from pgdr.integrity.findings import Finding, Report, priority
from pgdr.integrity.run import CheckOptions, run_check
from pgdr.profile.model import Severity

__all__ = ["CheckOptions", "Finding", "Report", "Severity", "priority", "run_check"]
