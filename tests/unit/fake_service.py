"""A fake /embed_sparse for httpx.MockTransport: spec-shaped answers, scripted failures.

Vectors are derived from each text (one index per distinct word, from a stable hash;
value = word count), so tests can check that every vector belongs to its own text after
batching, concurrency and splitting. Indices are emitted in *descending* order, so the
client's sorting is exercised on every call.
"""

from __future__ import annotations

import threading
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


def expected_vector(text: str) -> tuple[list[int], list[float], list[str]]:
    """What the fake returns for `text`, sorted ascending (what the client must produce)."""
    counts = Counter(text.split())
    triples = sorted((zlib.crc32(w.encode()) % 30522, float(c), w) for w, c in counts.items())
    return [t[0] for t in triples], [t[1] for t in triples], [t[2] for t in triples]


Script = Callable[[httpx.Request, dict[str, Any]], httpx.Response | None]


@dataclass
class FakeService:
    """Records every request; answers like the service unless a script step intervenes.

    Attributes:
        cap: Above this many texts per request, answer 413 (the hosted cap is 100).
        script: Responses (or callables) consumed one per request before normal answers.
    """

    cap: int = 100
    api_key: str | None = None
    script: list[httpx.Response | Script] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    on_request: Callable[[dict[str, Any]], None] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        with self.lock:
            self.requests.append(request)
            self.bodies.append(body)
            step = self.script.pop(0) if self.script else None
        if self.on_request is not None:
            self.on_request(body)
        if isinstance(step, httpx.Response):
            return step
        if step is not None:
            answer = step(request, body)
            if answer is not None:
                return answer
        return self.answer(request, body)

    def answer(self, request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        if self.api_key is not None and request.headers.get("x-chroma-token") != self.api_key:
            return httpx.Response(401, json={"error": "invalid token"})
        texts = body["texts"]
        if len(texts) > self.cap:
            return httpx.Response(413, json={"error": f"at most {self.cap} texts"})
        items = []
        for text in texts:
            idx, val, lab = expected_vector(text)
            item: dict[str, Any] = {"indices": idx[::-1], "values": val[::-1]}
            if body.get("fetch_labels"):
                item["labels"] = lab[::-1]
            items.append(item)
        tokens = sum(len(t.split()) for t in texts)
        return httpx.Response(200, json={"embeddings": items, "num_tokens": tokens})

    @property
    def sizes(self) -> list[int]:
        """Number of texts in each request, in arrival order."""
        return [len(b["texts"]) for b in self.bodies]


def error(status: int, text: str = "nope", headers: dict[str, str] | None = None) -> httpx.Response:
    """An error response shaped as the spec's ErrorResponse."""
    return httpx.Response(status, json={"error": text}, headers=headers)
