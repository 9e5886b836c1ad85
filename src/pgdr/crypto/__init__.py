"""Compression and authenticated encryption of everything pgdr stores.

Envelope encryption: a random 256-bit data key per backup (or per WAL timeline batch) encrypts
the data with AES-256-GCM; the data key is stored wrapped (AES-256-GCM) by the master key, so
``pgdr key rotate`` re-wraps keys without rewriting data. Every sealed object binds its logical
name as associated data, so objects cannot be swapped, truncated or altered unnoticed.
"""

from pgdr.crypto.envelope import (
    CorruptObject,
    derive_subkey,
    open_sealed,
    open_sealed_pieces,
    seal,
    sign,
    verify_signature,
)
from pgdr.crypto.keys import (
    DataKey,
    MasterKey,
    WrappedKey,
    load_master_key,
)
from pgdr.crypto.pipeline import Background, parallel_map

__all__ = [
    "Background",
    "CorruptObject",
    "DataKey",
    "MasterKey",
    "WrappedKey",
    "derive_subkey",
    "load_master_key",
    "open_sealed",
    "open_sealed_pieces",
    "parallel_map",
    "seal",
    "sign",
    "verify_signature",
]
