"""Reading a secret from a file (a key, a token, a password): one sentence when it cannot be.

Invariants: the secret's text never appears in an error message; a file that is unreadable, or
is not UTF-8 text, is a :class:`~pgdr.core.errors.ConfigError` naming the file and the setting it
came from, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

from pgdr.core.errors import ConfigError


def read_secret_file(path: Path, origin: str) -> str:
    """The text of the secret file ``path`` (``origin`` names where it was configured)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{origin} {path} cannot be read: {exc.strerror or exc}.") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{origin} {path} is not UTF-8 text; is it the right file?") from None
