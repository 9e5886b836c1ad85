"""Application profiles: what an application's data looks like to pgdr.

A profile (TOML, see docs/profiles.md) names the critical tables, declared relations beyond the
catalog's foreign keys, embedding sources (table, text expression, vector column, dimension, the
status column to move while re-embedding) and custom rules. The ConvoAI profile ships built in.
"""

from pgdr.profile.model import (
    EmbeddingSource,
    Profile,
    Relation,
    Rule,
    StatusColumn,
    TableSpec,
    load_profile,
)

__all__ = [
    "EmbeddingSource",
    "Profile",
    "Relation",
    "Rule",
    "StatusColumn",
    "TableSpec",
    "load_profile",
]
