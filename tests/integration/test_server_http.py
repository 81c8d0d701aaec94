"""The server over real HTTP on 127.0.0.1, started by the test kit (chroma_sparse_ef.testing)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from chromadb.utils.embedding_functions.chroma_bm25_embedding_function import (
    ChromaBm25EmbeddingFunction,
)
from chromadb.utils.embedding_functions.chroma_cloud_splade_embedding_function import (
    ChromaCloudSpladeEmbeddingFunction,
)

from chroma_sparse_ef import ConfigurationError
from chroma_sparse_ef.server import Bm25Backend, EmbedOutput
from chroma_sparse_ef.testing import LocalServer, run_local_server

SECRET = "sk-planted-secret-http-77"
HEADERS = {"x-chroma-token": "t", "x-chroma-embedding-model": "BAAI/bge-m3"}
BODY = {"texts": ["Hybrid search fuses dense and sparse rankings."], "task": "", "target": ""}

Factory = Callable[..., LocalServer]


def test_session_server_embeds_over_http(embed_server_url: str) -> None:
    """The session fixture's server answers POST /embed_sparse with BM25 vectors."""
    response = httpx.post(f"{embed_server_url}/embed_sparse", headers=HEADERS, json=BODY)
    assert response.status_code == 200
    assert response.headers["x-chroma-sparse-ef-backend"] == "bm25"
    assert len(response.json()["embeddings"][0]["indices"]) == 6


def test_healthz_over_http(embed_server: LocalServer) -> None:
    """/healthz is up and names the backend."""
    body = httpx.get(f"{embed_server.url}/healthz").json()
    assert body["status"] == "ok"
    assert body["backends"][0]["name"] == "bm25"


def test_chromadbs_own_splade_function_works_against_the_local_server(
    embed_server_env: str,
) -> None:
    """chromadb's ChromaCloudSpladeEmbeddingFunction, unmodified, gets BM25 vectors back."""
    texts = ["Sparse vectors for exact terms.", "Another document about Chroma."]
    vectors = ChromaCloudSpladeEmbeddingFunction()(texts)
    expected = ChromaBm25EmbeddingFunction()(texts)
    assert [list(v.indices) for v in vectors] == [list(v.indices) for v in expected]


def test_added_latency_is_awaited_so_requests_overlap(embed_server_factory: Factory) -> None:
    """8 concurrent requests with 500 ms latency finish in under half of 8 x 500 ms.

    One pooled client, warmed up with 8 connections, so what is timed is the server
    (per-request clients spend most of a loaded machine's time building SSL contexts).
    """
    server = embed_server_factory(latency_ms=500)
    with (
        httpx.Client(limits=httpx.Limits(max_connections=8)) as client,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):

        def post(_: int) -> int:
            return client.post(server.embed_sparse_url, headers=HEADERS, json=BODY).status_code

        assert list(pool.map(post, range(8))) == [200] * 8  # warm up: 8 open connections
        start = time.perf_counter()
        codes = list(pool.map(post, range(8)))
        elapsed = time.perf_counter() - start
    assert codes == [200] * 8
    # In sequence they would take at least 4 s.
    assert 0.5 <= elapsed < 2.0


def test_rate_limit_over_http_answers_429_with_retry_after(embed_server_factory: Factory) -> None:
    """Past the rate: 429, Retry-After in seconds, retry-after-ms, an {"error"} body."""
    server = embed_server_factory(rate_limit="1/min")
    first = httpx.post(server.embed_sparse_url, headers=HEADERS, json=BODY)
    second = httpx.post(server.embed_sparse_url, headers=HEADERS, json=BODY)
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.headers["retry-after"] == "60"
    assert int(second.headers["retry-after-ms"]) > 59_000
    assert set(second.json()) == {"error"}


def test_api_key_over_http_and_never_logged(
    embed_server_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """With a key: wrong token 401, right token 200, and the key is in no log record."""
    caplog.set_level(logging.DEBUG)
    server = embed_server_factory(api_key=SECRET, access_log=True)
    wrong = httpx.post(server.embed_sparse_url, headers=HEADERS, json=BODY)
    right = httpx.post(
        server.embed_sparse_url, headers={**HEADERS, "x-chroma-token": SECRET}, json=BODY
    )
    assert (wrong.status_code, right.status_code) == (401, 200)
    assert "POST /embed_sparse" in caplog.text  # the access log did run
    assert SECRET not in caplog.text
    assert SECRET not in wrong.text


class BlockingBackend:
    """BM25 that holds each call until released: proves embedding runs off the event loop."""

    def __init__(self) -> None:
        self._bm25 = Bm25Backend()
        self.name = "blocking"
        self.models = self._bm25.models
        self.description = "BM25, held until released"
        self.started = threading.Event()
        self.release = threading.Event()

    def embed(self, texts: Sequence[str], **options: object) -> EmbedOutput:
        self.started.set()
        assert self.release.wait(10)
        return self._bm25.embed(texts, **options)  # type: ignore[arg-type]


def test_embedding_work_does_not_block_the_event_loop(embed_server_factory: Factory) -> None:
    """While a batch is being embedded, /healthz still answers at once."""
    backend = BlockingBackend()
    server = embed_server_factory(backends=[backend])
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(httpx.post, server.embed_sparse_url, headers=HEADERS, json=BODY)
        assert backend.started.wait(10)
        try:
            health = httpx.get(f"{server.url}/healthz", timeout=2.0)
            assert not pending.done()
        finally:
            backend.release.set()
        assert health.status_code == 200
        assert pending.result(timeout=10).status_code == 200


def test_run_local_server_stops_on_exit() -> None:
    """Outside pytest fixtures: the context manager serves, then closes its port."""
    with run_local_server() as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz", timeout=2.0)


def test_run_local_server_on_a_busy_port_is_a_configuration_error(
    embed_server: LocalServer,
) -> None:
    """A taken port fails with one clear ConfigurationError, not a hang or a traceback."""
    with (
        pytest.raises(ConfigurationError, match="cannot listen on"),
        run_local_server(port=embed_server.port),
    ):
        pass  # pragma: no cover
