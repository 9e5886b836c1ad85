"""``pgdr reembed`` as one call: pick the sources, run the engine with a provider, judge the result.

The provider is always closed, whatever happens; the run logs its start and outcome through
``logging``; a run that left rows without a vector, or sources other workers are still
finishing, ends in a :class:`~pgdr.core.errors.CheckFailed` naming what to do next.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from pgdr.core.errors import CheckFailed, ConfigError
from pgdr.core.log import logger
from pgdr.embeddings.cache import save_cache
from pgdr.embeddings.engine import Reembedder, ReembedOptions, ReembedReport
from pgdr.embeddings.providers import make_provider
from pgdr.embeddings.settings import EmbeddingSettings
from pgdr.embeddings.source import resolve_source
from pgdr.pool import connect
from pgdr.profile import Profile

log = logger(__name__)
Progress = Callable[[int], AbstractContextManager[Callable[[int], None]]]


def profile_sources(profile: Profile, source: str) -> list[str]:
    """The embedding sources named by ``source`` (one name, or ``all``)."""
    names = [s.name for s in profile.embeddings]
    if source == "all":
        if not names:
            raise ConfigError(f"Profile {profile.name!r} declares no embedding sources.")
        return names
    profile.embedding_source(source)  # a clear error for an unknown name
    return [source]


def reembed(
    conninfo: str,
    profile: Profile,
    options: ReembedOptions,
    settings: EmbeddingSettings,
    progress: Progress,
) -> ReembedReport:
    """Re-embed ``options.sources``; ``progress(total)`` gives the bar to advance."""
    provider = make_provider(settings)
    try:
        engine = Reembedder(conninfo, profile, provider, options)
        engine.prepare()
        log.info(
            "Re-embedding %d rows of %s with %s.",
            engine.pending_rows,
            ", ".join(options.sources),
            settings.model,
        )
        with progress(engine.pending_rows) as advance:
            report = engine.run(advance)
    finally:
        provider.close()
    log.info("Re-embedding done: %d rows missing, %d failed.", report.missing, report.failures)
    return report


def require_finished(report: ReembedReport) -> None:
    """Raise CheckFailed unless every row has its vector and every source is finished."""
    if report.ok:
        return
    unfinished = [s.source for s in report.sources if not s.finished]
    if unfinished:
        raise CheckFailed(
            f"Other workers are still finishing {', '.join(unfinished)}; see pgdr reembed status."
        )
    raise CheckFailed(
        f"{report.missing:,} rows still miss an embedding and {report.failures:,} rows "
        "failed (pgdr reembed status lists why); fix them and run with --missing-only."
    )


def save_caches(
    conninfo: str, profile: Profile, names: list[str], model: str
) -> list[dict[str, Any]]:
    """Copy the existing vectors of ``names`` into the content-hash cache (no API calls)."""
    with connect(conninfo, autocommit=True) as conn:
        return [
            save_cache(
                conn, resolve_source(conn, profile.embedding_source(n), profile.schema_name), model
            )
            for n in names
        ]
