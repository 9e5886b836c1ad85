"""A local HTTP server speaking the OpenAI embeddings API, for tests, benchmarks and demos.

It is the one fake pgdr allows (the real API is paid): ``POST /v1/embeddings`` answers with
deterministic unit vectors derived from the SHA-256 of each input (:func:`fake_vectors`), in
``float`` or ``base64`` encoding, after a configurable latency. Faults can be queued (``429``,
``500``, ``timeout``, ``malformed``, one per request), inputs containing :attr:`reject_marker`
are refused with HTTP 400 as the real API refuses bad inputs, and every request and input is
counted (``GET /stats``), so tests can prove which texts were sent and how often.

Run it alone with ``python -m pgdr.embeddings.fake_api --port 8765 --latency 0.02``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import numpy.typing as npt

from pgdr.core.memory import keep_freed_memory
from pgdr.embeddings.providers import estimate_tokens

FAULTS = ("429", "500", "timeout", "malformed")
Reply = tuple[int, dict[str, str], bytes]  # status, extra headers, body


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_BLOCK = 64  # texts computed together


def fake_vectors(texts: list[str], dimension: int) -> npt.NDArray[np.float32]:
    """The unit vectors the fake API returns for ``texts``, one row each: same text, same
    vector, whatever else is in the request.

    Element ``j`` of a text's vector is SplitMix64 of (the first 8 bytes of the text's SHA-256,
    ``j``), computed for the whole request at once with numpy: a generator per text (numpy's
    ``default_rng``) cost 120-170 us a vector, so a 2,048-input request kept a core busy for
    0.3 s that a real provider spends on its own machines, not on the client's.
    """
    seeds = np.array(
        [int.from_bytes(hashlib.sha256(t.encode("utf-8")).digest()[:8], "little") for t in texts],
        dtype=np.uint64,
    ).reshape(-1, 1)
    steps = np.arange(1, dimension + 1, dtype=np.uint64) * _GOLDEN
    out = np.empty((len(texts), dimension), dtype=np.float32)
    block = np.empty((_BLOCK, dimension), dtype=np.uint64)  # reused: stays in the CPU cache
    for start in range(0, len(texts), _BLOCK):
        part = seeds[start : start + _BLOCK]
        z = block[: len(part)]
        np.add(part, steps, out=z)
        z ^= z >> np.uint64(30)
        z *= _MIX1
        z ^= z >> np.uint64(27)
        z *= _MIX2
        z ^= z >> np.uint64(31)
        z >>= np.uint64(40)  # 24 bits, centred below
        out[start : start + _BLOCK] = z
    out -= np.float32(1 << 23)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def fake_vector(text: str, dimension: int) -> npt.NDArray[np.float32]:
    """The unit vector the fake API returns for ``text``."""
    vec: npt.NDArray[np.float32] = fake_vectors([text], dimension)[0]
    return vec


class FakeEmbeddingsAPI:
    """The server and its knobs; ``with FakeEmbeddingsAPI() as api: api.base_url``."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        dimension: int = 1536,
        fixed_dimension: int | None = None,
        latency: float = 0.0,
        max_inputs: int = 2048,
        max_input_tokens: int = 8191,
        timeout_sleep: float = 3.0,
        ignore_encoding: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.dimension = dimension
        self.fixed_dimension = fixed_dimension
        self.latency = latency
        self.max_inputs = max_inputs
        self.max_input_tokens = max_input_tokens
        self.timeout_sleep = timeout_sleep
        self.ignore_encoding = ignore_encoding  # answer float lists whatever was asked
        self.encodings: Counter[str] = Counter()  # encoding_format asked, per request
        self.reject_marker = "REJECT-ME"
        self.faults: deque[str] = deque()
        self.on_request: Callable[[list[str]], None] | None = None
        self.lock = threading.Lock()
        self.requests = 0
        self.inputs = 0
        self.faults_served = 0
        self.texts: Counter[str] = Counter()
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> FakeEmbeddingsAPI:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeEmbeddingsAPI:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self.lock:
            self.requests = self.inputs = self.faults_served = 0
            self.texts.clear()
            self.encodings.clear()
            self.faults.clear()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "inputs": self.inputs,
                "faults_served": self.faults_served,
                "distinct_texts": len(self.texts),
                "max_sends_per_text": max(self.texts.values(), default=0),
            }

    # -- the API ------------------------------------------------------------------------------
    def answer(self, headers: dict[str, str], body: bytes) -> Reply:
        """Status, extra headers and body for one ``POST /v1/embeddings``."""
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        fault = self._count_request()
        if self.latency:
            time.sleep(self.latency)
        faulty = self._fault_reply(fault)
        if faulty is not None:
            return faulty
        try:
            request = json.loads(body)
            inputs = request["input"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "We could not parse the JSON body of your request.", None)
        if isinstance(inputs, str):
            inputs = [inputs]
        refused = self._refuse(inputs)
        if refused is not None:
            return refused
        if self.on_request is not None:
            self.on_request(inputs)
        with self.lock:
            self.inputs += len(inputs)
            self.texts.update(inputs)
        return 200, {}, self._embeddings(request, inputs)

    def _count_request(self) -> str | None:
        """Count one request; the fault queued for it, if any."""
        with self.lock:
            fault = self.faults.popleft() if self.faults else None
            self.requests += 1
            if fault:
                self.faults_served += 1
        return fault

    def _fault_reply(self, fault: str | None) -> Reply | None:
        """The reply a queued fault forces; None to answer normally (after a ``timeout``'s
        sleep, the request is answered, too late for a client with a shorter timeout)."""
        if fault == "429":
            status, hdrs, out = _error(429, "Rate limit reached.", "rate_limit_exceeded")
            return status, hdrs | {"retry-after-ms": "50"}, out
        if fault == "500":
            return _error(500, "The server had an error.", "server_error")
        if fault == "timeout":
            time.sleep(self.timeout_sleep)
        if fault == "malformed":
            return 200, {}, b'{"object": "list", "data": [{"embedd'
        return None

    def _refuse(self, inputs: list[Any]) -> Reply | None:
        """HTTP 400 as the real API answers too many, empty, flagged or too long inputs."""
        if len(inputs) > self.max_inputs:
            return _error(400, f"Too many inputs: at most {self.max_inputs}.", None)
        for text in inputs:
            if not isinstance(text, str) or not text:
                return _error(400, "'$.input' is invalid.", None)
            if self.reject_marker and self.reject_marker in text:
                return _error(400, "The input was flagged as invalid.", None)
            if estimate_tokens(text) > self.max_input_tokens:
                return _error(
                    400,
                    f"This model's maximum context length is {self.max_input_tokens} tokens.",
                    None,
                )
        return None

    def _embeddings(self, request: dict[str, Any], inputs: list[str]) -> bytes:
        """The API's JSON list of embeddings for ``inputs``, in the encoding the request asked.

        Base64 vectors are written into the JSON as they are (their alphabet needs no escaping):
        ``json.dumps`` scanned the 8 MB of a 1,000-input answer at 70 MB/s, time a real
        provider spends on its own machines."""
        dimension = self.fixed_dimension or int(request.get("dimensions") or self.dimension)
        asked = str(request.get("encoding_format") or "float")
        with self.lock:
            self.encodings[asked] += 1
        vecs = fake_vectors(inputs, dimension).astype("<f4")
        envelope = {**_ENVELOPE, "model": request.get("model", "")}
        if asked != "base64" or self.ignore_encoding:
            data = [
                {"object": "embedding", "index": i, "embedding": vec.tolist()}
                for i, vec in enumerate(vecs)
            ]
            return json.dumps({**envelope, "data": data}).encode()
        items: list[bytes | memoryview] = []
        for i, text in enumerate(_base64_rows(vecs)):
            items += (b'{"object": "embedding", "index": %d, "embedding": "' % i, text, b'"},')
        if items:
            items[-1] = b'"}'  # no comma after the last item
        head = json.dumps(envelope)[:-1].encode() + b', "data": ['
        return b"".join([head, *items, b"]}"])


def _base64_rows(vecs: npt.NDArray[np.float32]) -> list[bytes | memoryview]:
    """Each row's bytes in base64; when a row's size is divisible by 3 (no padding), the whole
    array is encoded in one call and cut into views (a call per row cost 30 us a vector; a copy
    per row and per join, with each 8 MB block fresh memory, 10 ms a request)."""
    raw, size = vecs.tobytes(), vecs.shape[1] * 4
    if size % 3:
        return [base64.b64encode(raw[i : i + size]) for i in range(0, len(raw), size)]
    text, step = memoryview(base64.b64encode(raw)), size // 3 * 4
    return [text[i : i + step] for i in range(0, len(text), step)]


_ENVELOPE = {"object": "list", "usage": {"prompt_tokens": 0, "total_tokens": 0}}


def _error(status: int, message: str, code: str | None) -> Reply:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return status, {}, json.dumps(body).encode()


def _handler(api: FakeEmbeddingsAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/stats", "/v1/stats"):
                self._send(200, {}, json.dumps(api.stats()).encode())
            else:
                self._send(*_error(404, "Not found.", None))

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            path = self.path.rstrip("/")
            if path == "/v1/embeddings":
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._send(*api.answer(headers, body))
            elif path == "/reset":
                api.reset()
                self._send(200, {}, b"{}")
            elif path == "/faults":
                with api.lock:
                    api.faults.extend(json.loads(body or b"[]"))
                self._send(200, {}, b"{}")
            else:
                self._send(*_error(404, "Not found.", None))

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--dimension", type=int, default=1536)
    parser.add_argument("--max-inputs", type=int, default=2048)
    parser.add_argument("--api-key", default="test-key")
    args = parser.parse_args()
    keep_freed_memory()  # a provider's answers are megabytes each: no fresh pages per request
    api = FakeEmbeddingsAPI(
        api_key=args.api_key,
        dimension=args.dimension,
        latency=args.latency,
        max_inputs=args.max_inputs,
        host=args.host,
        port=args.port,
    )
    print(api.base_url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        api._server.serve_forever()


if __name__ == "__main__":
    main()
