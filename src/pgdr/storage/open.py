"""Turning a repository URL (a path or ``s3://bucket/prefix``) into an :class:`ObjectStore`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pgdr.core.errors import ConfigError
from pgdr.core.secrets import read_secret_file
from pgdr.storage.base import ObjectStore
from pgdr.storage.local import LocalStore
from pgdr.storage.s3 import S3Store


def _secret(options: Mapping[str, Any], name: str, env_name: str) -> str | None:
    """A credential from ``<name>_file`` in the options, else from the environment."""
    file_option = options.get(f"{name}_file")
    if file_option:
        return read_secret_file(Path(str(file_option)), f"{name}_file").strip()
    return os.environ.get(env_name)


def open_store(url: str, options: Mapping[str, Any] | None = None) -> ObjectStore:
    """The store for ``url``; ``options`` is the repository's table from ``pgdr.toml``."""
    options = options or {}
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"Repository URL {url!r} names no bucket (use s3://bucket/prefix).")
        return S3Store(
            parsed.netloc,
            parsed.path,
            endpoint_url=options.get("endpoint")
            or os.environ.get("PGDR_S3_ENDPOINT")
            or os.environ.get("AWS_ENDPOINT_URL"),
            region=options.get("region") or os.environ.get("AWS_REGION"),
            access_key_id=_secret(options, "access_key_id", "AWS_ACCESS_KEY_ID"),
            secret_access_key=_secret(options, "secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        )
    if parsed.scheme in ("", "file"):
        return LocalStore(Path(parsed.path if parsed.scheme else url).expanduser())
    raise ConfigError(f"Repository URL {url!r} is neither a path nor s3://bucket/prefix.")
