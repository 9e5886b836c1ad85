"""The API token: ``PGDR_API_TOKEN``, ``PGDR_API_TOKEN_FILE``, or one generated into PGDR_HOME.

Invariant: the service never runs with an empty token. A token file that is empty or holds only
whitespace is refused (it would otherwise compare equal to a request without a header), as is a
token shorter than 16 characters.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from pgdr.core.errors import ConfigError
from pgdr.core.secrets import read_secret_file

MIN_TOKEN_LENGTH = 16


def _read_token_file(path: Path, origin: str) -> str:
    token = read_secret_file(path, origin).strip()
    if not token:
        raise ConfigError(
            f"The API token file {path} is empty; put a token of at least "
            f"{MIN_TOKEN_LENGTH} characters in it (or delete it to have one generated)."
        )
    return token


def check_token(token: str, origin: str) -> str:
    """``token`` when it is long enough to guard the API; a ConfigError otherwise."""
    if len(token.strip()) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"The API token from {origin} must be at least {MIN_TOKEN_LENGTH} characters long."
        )
    return token


def load_api_token(home: Path, environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """The token in force, and a note to show when one was just generated."""
    env = os.environ if environ is None else environ
    if env.get("PGDR_API_TOKEN"):
        return check_token(env["PGDR_API_TOKEN"], "PGDR_API_TOKEN"), None
    if env.get("PGDR_API_TOKEN_FILE"):
        path = Path(env["PGDR_API_TOKEN_FILE"])
        return check_token(_read_token_file(path, "PGDR_API_TOKEN_FILE"), str(path)), None
    path = home / "api-token"
    if path.is_file():
        return check_token(_read_token_file(path, "The API token file"), str(path)), None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip(), f"Generated an API token in {path} (mode 0600)."
