"""Which repository the WAL commands use, and the master key that opens it.

``PGDR_REPO`` (a path or ``s3://bucket/prefix``), else ``[repository] url`` in ``pgdr.toml``,
else ``$PGDR_HOME/repo``. The repository's table in ``pgdr.toml`` carries S3 options.
"""

from __future__ import annotations

import os
from typing import Any

from pgdr.config import PgdrSettings, load_toml
from pgdr.crypto import MasterKey, load_master_key
from pgdr.storage import ObjectStore, open_store


def repository_options(settings: PgdrSettings) -> tuple[str, dict[str, Any]]:
    toml, _path = load_toml(settings)
    options: dict[str, Any] = dict(toml.get("repository", {}))
    url = os.environ.get("PGDR_REPO") or options.get("url") or str(settings.home / "repo")
    return str(url), options


def open_repository(settings: PgdrSettings) -> ObjectStore:
    url, options = repository_options(settings)
    return open_store(url, options)


def master_key(settings: PgdrSettings) -> MasterKey:
    key, _note = load_master_key(settings.home)
    return key
