"""Master keys (from the environment, a file, or generated for the embedded default) and data keys.

``PGDR_ENCRYPTION_KEY`` holds a base64-encoded 32-byte key; ``PGDR_ENCRYPTION_KEY_FILE`` names a
file holding one. With neither, the embedded default key is ``$PGDR_HOME/keys/master.key``; only
a writing command into a repository that holds nothing sealed yet may generate it (mode 0600,
saying where it is) — a read command never creates a key. A key file readable by group or others
is refused with the ``chmod`` to run, as ssh refuses such private keys. A key's id is derived
from the key itself, so a repository can tell "wrong key" from "damaged data".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pgdr.core.errors import ConfigError
from pgdr.core.secrets import read_secret_file

KEY_BYTES = 32
NONCE_BYTES = 12
WRAP_AAD = b"pgdr/data-key/v1"


class MissingMasterKey(ConfigError):
    """No key is configured and the embedded default key file does not exist."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"There is no master key at {path}.")
        self.path = path


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"pgdr/key-id/v1" + key).hexdigest()[:16]


@dataclass(frozen=True)
class WrappedKey:
    """A data key encrypted by a master key, as stored in manifests."""

    master_key_id: str
    nonce: str
    ciphertext: str

    def as_dict(self) -> dict[str, str]:
        return {
            "master_key_id": self.master_key_id,
            "nonce": self.nonce,
            "ciphertext": self.ciphertext,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> WrappedKey:
        return cls(data["master_key_id"], data["nonce"], data["ciphertext"])


@dataclass(frozen=True, repr=False)
class DataKey:
    """A per-backup key; never stored in the clear."""

    key: bytes

    def __repr__(self) -> str:
        return "DataKey(<hidden>)"

    @classmethod
    def generate(cls) -> DataKey:
        return cls(secrets.token_bytes(KEY_BYTES))


@dataclass(frozen=True, repr=False)
class MasterKey:
    key: bytes
    origin: str

    def __repr__(self) -> str:
        return f"MasterKey(id={self.key_id}, origin={self.origin})"

    @property
    def key_id(self) -> str:
        return _key_id(self.key)

    def wrap(self, data_key: DataKey) -> WrappedKey:
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = AESGCM(self.key).encrypt(nonce, data_key.key, WRAP_AAD)
        return WrappedKey(
            self.key_id,
            base64.b64encode(nonce).decode(),
            base64.b64encode(ciphertext).decode(),
        )

    def unwrap(self, wrapped: WrappedKey, what: str = "this backup") -> DataKey:
        if wrapped.master_key_id != self.key_id:
            raise ConfigError(
                f"The encryption key in use (id {self.key_id}) is not the key that protects "
                f"{what} (id {wrapped.master_key_id}); set PGDR_ENCRYPTION_KEY or "
                "PGDR_ENCRYPTION_KEY_FILE to the right key."
            )
        try:
            key = AESGCM(self.key).decrypt(
                base64.b64decode(wrapped.nonce), base64.b64decode(wrapped.ciphertext), WRAP_AAD
            )
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise ConfigError(
                f"The data key of {what} cannot be unwrapped: the key is wrong or the "
                "manifest was tampered with."
            ) from exc
        return DataKey(key)


def decode_key(text: str, origin: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{origin} is not valid base64.") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{origin} must decode to {KEY_BYTES} bytes, not {len(key)}.")
    return key


def generate_key_text() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def write_key_file(path: Path, key_text: str) -> None:
    """Create a key file with mode 0600; never overwrites an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key_text + "\n")


def read_key_file(path: Path, origin: str) -> bytes:
    """The key in ``path``; refused when group or others may read or write it."""
    text = read_secret_file(path, origin)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"The key file {path} is accessible by group or others (mode "
            f"{stat.S_IMODE(mode):04o}); run `chmod 600 {path}`."
        )
    return decode_key(text, f"The key file {path}")


def default_key_path(home: Path) -> Path:
    return home / "keys" / "master.key"


def load_master_key(
    home: Path, environ: Mapping[str, str] | None = None, generate: bool = False
) -> tuple[MasterKey, str | None]:
    """The master key in force, and a note to show when one was just generated.

    Without a configured key and without the default key file: :class:`MissingMasterKey`, or
    with ``generate`` (writing commands into an empty repository only) a new default key.
    """
    env = os.environ if environ is None else environ
    if env.get("PGDR_ENCRYPTION_KEY"):
        return MasterKey(
            decode_key(env["PGDR_ENCRYPTION_KEY"], "PGDR_ENCRYPTION_KEY"), "PGDR_ENCRYPTION_KEY"
        ), None
    if env.get("PGDR_ENCRYPTION_KEY_FILE"):
        path = Path(env["PGDR_ENCRYPTION_KEY_FILE"])
        return MasterKey(read_key_file(path, "PGDR_ENCRYPTION_KEY_FILE"), str(path)), None
    default = default_key_path(home)
    if default.is_file():
        return MasterKey(read_key_file(default, "The key file"), str(default)), None
    if not generate:
        raise MissingMasterKey(default)
    write_key_file(default, generate_key_text())
    note = (
        f"Generated a new master key at {default} (mode 0600). Keep a copy somewhere safe: "
        "without it no backup can be read."
    )
    return MasterKey(read_key_file(default, "The key file"), str(default)), note
