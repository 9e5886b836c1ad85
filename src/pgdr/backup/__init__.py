"""Base backups and the repository that holds them.

Owns repositories (named, local or S3, with retention policies), taking base backups with
``pg_basebackup`` streamed into sealed chunks, manifests (written last, authenticated), listing,
verification (every chunk, every file by name, optional restore test), retention (``prune``),
copies between repositories and master-key rotation. The repository is the only source of truth
about backups.

Taking a backup is :mod:`pgdr.backup.take` (not re-exported: it needs psycopg, which a restore
starts faster without).
"""

from pgdr.backup.manifest import ChunkEntry, FileEntry, ForgedManifest, Manifest
from pgdr.backup.repository import (
    DEFAULT_REPOSITORY,
    RepoConfig,
    Repository,
    RetentionPolicy,
    load_repositories,
    open_repository,
    repository_at,
)

__all__ = [
    "DEFAULT_REPOSITORY",
    "ChunkEntry",
    "FileEntry",
    "ForgedManifest",
    "Manifest",
    "RepoConfig",
    "Repository",
    "RetentionPolicy",
    "load_repositories",
    "open_repository",
    "repository_at",
]
