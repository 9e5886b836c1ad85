"""Integrity checks: orphans, broken embeddings, application rules, storage, snapshots.

``run_check()`` is ``pgdr check``: one aggregate pass per table (plan.py) built from the profile
and the catalog (catalog.py), findings with severities and P-levels (findings.py), storage checks
(storage.py). Snapshots and their comparison live in snapshot.py, pre-migration inventories in
inventory.py, the psql-callable ``pgdr.check_referential_integrity()`` in sqlfunc.py, and where
pgdr keeps these records in records.py.
"""

from pgdr.core.severity import FindingLevel, priority
from pgdr.integrity.findings import Finding, Report
from pgdr.integrity.run import CheckOptions, run_check

__all__ = ["CheckOptions", "Finding", "FindingLevel", "Report", "priority", "run_check"]
