"""The API token: ``PGDR_API_TOKEN``, ``PGDR_API_TOKEN_FILE``, or one generated into PGDR_HOME."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from pgdr.core.errors import ConfigError
from pgdr.core.secrets import read_secret_file

MIN_TOKEN_LENGTH = 16


def load_api_token(home: Path, environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """The token in force, and a note to show when one was just generated."""
    env = os.environ if environ is None else environ
    token = env.get("PGDR_API_TOKEN")
    origin = "PGDR_API_TOKEN"
    if not token and env.get("PGDR_API_TOKEN_FILE"):
        path = Path(env["PGDR_API_TOKEN_FILE"])
        token = read_secret_file(path, "PGDR_API_TOKEN_FILE").strip()
        origin = str(path)
    if token:
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"The API token from {origin} must be at least 16 characters long.")
        return token, None
    path = home / "api-token"
    if path.is_file():
        return read_secret_file(path, "The API token file").strip(), None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip(), f"Generated an API token in {path} (mode 0600)."
