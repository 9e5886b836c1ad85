"""Embedding regeneration: re-embed a platform fast, resumably, and only what needs it.

Modules: ``settings`` (provider configuration from the environment), ``providers`` (the
OpenAI-compatible HTTP provider and the local sentence-transformers one), ``source`` (an
embedding source as the catalog describes it), ``jobs`` (job state and the batch queue in the
target database's ``pgdr`` schema), ``cache`` (the content-hash cache), ``writer`` (bulk reads
and binary-COPY writes), ``engine`` (the run: plan, workers, finish, verify), ``relocate``
(moving the vector extension to another schema in place) and ``fake_api`` (a local server
speaking the OpenAI embeddings API, for tests and benchmarks).
"""

from pgdr.embeddings.engine import Reembedder, ReembedOptions, ReembedReport, verify
from pgdr.embeddings.providers import (
    EmbedResult,
    LocalProvider,
    OpenAIProvider,
    Provider,
    estimate_tokens,
    make_provider,
)
from pgdr.embeddings.settings import EmbeddingSettings, load_embedding_settings

__all__ = [
    "EmbedResult",
    "EmbeddingSettings",
    "LocalProvider",
    "OpenAIProvider",
    "Provider",
    "ReembedOptions",
    "ReembedReport",
    "Reembedder",
    "estimate_tokens",
    "load_embedding_settings",
    "make_provider",
    "verify",
]
