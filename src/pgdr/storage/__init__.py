"""Object storage for repositories: one small interface, a local-filesystem and an S3 backend.

Everything pgdr keeps (chunks, manifests, WAL segments, records) is an object under a key like
``backups/20261125T090000Z/chunks/000001``. Writes are atomic (a reader sees the old object or
the new one, never a torn one); nothing here knows about encryption or PostgreSQL.
"""

from pgdr.storage.base import ObjectInfo, ObjectNotFound, ObjectStore
from pgdr.storage.local import LocalStore
from pgdr.storage.open import open_store

__all__ = ["LocalStore", "ObjectInfo", "ObjectNotFound", "ObjectStore", "open_store"]
