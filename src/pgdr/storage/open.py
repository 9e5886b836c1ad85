"""Turning a repository URL (a path or ``s3://bucket/prefix``) into an :class:`ObjectStore`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pgdr.core.errors import ConfigError
from pgdr.core.secrets import read_secret_file
from pgdr.storage.base import ObjectStore
from pgdr.storage.local import LocalStore


def _secret(options: Mapping[str, Any], name: str, env_name: str) -> str | None:
    """A credential from ``<name>_file`` in the options, else from the environment."""
    file_option = options.get(f"{name}_file")
    if file_option:
        return read_secret_file(Path(str(file_option)), f"{name}_file").strip()
    return os.environ.get(env_name)


BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _endpoint(options: Mapping[str, Any]) -> str | None:
    """The S3 endpoint URL, checked: ``http(s)://host[:port]``."""
    if options.get("endpoint") is not None:
        value, origin = options["endpoint"], "The repository's endpoint"
    elif os.environ.get("PGDR_S3_ENDPOINT"):
        value, origin = os.environ["PGDR_S3_ENDPOINT"], "PGDR_S3_ENDPOINT"
    elif os.environ.get("AWS_ENDPOINT_URL"):
        value, origin = os.environ["AWS_ENDPOINT_URL"], "AWS_ENDPOINT_URL"
    else:
        return None
    parsed = urlparse(value) if isinstance(value, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{origin} {value!r} is not a URL like https://s3.example.com:9000.")
    return str(value)


def _bucket(url: str, name: str) -> str:
    if not BUCKET.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"Repository URL {url!r} names the bucket {name!r}, which is not a valid S3 bucket "
            "name (3-63 lowercase letters, digits, dots and hyphens)."
        )
    return name


def open_store(url: str, options: Mapping[str, Any] | None = None) -> ObjectStore:
    """The store for ``url``; ``options`` is the repository's table from ``pgdr.toml``."""
    options = options or {}
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"Repository URL {url!r} names no bucket (use s3://bucket/prefix).")
        region = options.get("region") or os.environ.get("AWS_REGION")
        if region is not None and not isinstance(region, str):
            raise ConfigError(f"The region of repository {url!r} must be a string.")
        # Not a cycle: boto3 takes most of a second to import, paid only by S3 repositories.
        from pgdr.storage.s3 import S3Store  # noqa: PLC0415

        return S3Store(
            _bucket(url, parsed.netloc),
            parsed.path,
            endpoint_url=_endpoint(options),
            region=region,
            access_key_id=_secret(options, "access_key_id", "AWS_ACCESS_KEY_ID"),
            secret_access_key=_secret(options, "secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        )
    if parsed.scheme in ("", "file"):
        return LocalStore(Path(parsed.path if parsed.scheme else url).expanduser())
    raise ConfigError(f"Repository URL {url!r} is neither a path nor s3://bucket/prefix.")
