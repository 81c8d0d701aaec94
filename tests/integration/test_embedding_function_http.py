"""ChromaSparseEmbeddingFunction over real HTTP against the local server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging

import pytest
from chromadb.utils.embedding_functions.chroma_bm25_embedding_function import (
    ChromaBm25EmbeddingFunction,
)

from chroma_sparse_ef import (
    AuthenticationError,
    ChromaSparseEmbeddingFunction,
    InvalidRequestError,
    RateLimitError,
    ServiceError,
)
from chroma_sparse_ef._corpus import stdlib_docstrings
from chroma_sparse_ef.testing import LocalServer

SECRET = "ck-integration-secret-never-logged"


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    """Real English documents, available offline."""
    return [d.text for d in stdlib_docstrings(300)]


def reference(texts: list[str]) -> list[tuple[list[int], list[float], list[str] | None]]:
    """What the server's BM25 backend must produce, computed by chromadb directly."""
    vectors = ChromaBm25EmbeddingFunction(include_tokens=True)(texts)
    return [(v.indices, v.values, v.labels) for v in vectors]


def as_tuples(vectors: list) -> list[tuple[list[int], list[float], list[str] | None]]:  # type: ignore[type-arg]
    return [(v.indices, v.values, v.labels) for v in vectors]


def test_sync_call_returns_the_servers_real_vectors_in_order(
    embed_server_url: str, corpus: list[str]
) -> None:
    """300 documents, 20 per request, 8 in flight: each vector is its own text's BM25 vector."""
    ef = ChromaSparseEmbeddingFunction(
        base_url=embed_server_url, fetch_labels=True, batch_size=20, max_concurrency=8
    )
    assert as_tuples(ef(corpus)) == reference(corpus)
    assert (ef.usage.requests, ef.usage.texts) == (15, 300)
    assert ef.usage.tokens > 0


async def test_async_call_matches_the_sync_call(embed_server_url: str, corpus: list[str]) -> None:
    """acall gives exactly what __call__ gives, over concurrent async requests."""
    async with ChromaSparseEmbeddingFunction(
        base_url=embed_server_url, fetch_labels=True, batch_size=20, max_concurrency=8
    ) as ef:
        vectors = await ef.acall(corpus)
        queries = await ef.aembed_query(corpus[:3])
    assert as_tuples(vectors) == reference(corpus)
    assert as_tuples(queries) == reference(corpus[:3])


def test_many_threads_share_one_instance(embed_server_url: str, corpus: list[str]) -> None:
    """Concurrent callers on one instance each get their own, correct, results."""
    ef = ChromaSparseEmbeddingFunction(base_url=embed_server_url, batch_size=25)
    expected = [v[:2] for v in reference(corpus)]

    async def run_all() -> list[list[tuple[list[int], list[float]]]]:
        chunks = [corpus[i::4] for i in range(4)]
        results = await asyncio.gather(*(asyncio.to_thread(ef, chunk) for chunk in chunks))
        return [[(v.indices, v.values) for v in r] for r in results]

    for i, got in enumerate(asyncio.run(run_all())):
        assert got == expected[i::4]


def test_oversized_batches_are_split_after_a_real_413(
    embed_server_url: str, corpus: list[str]
) -> None:
    """batch_size=250 against a 100-text cap: 413s are split until accepted, nothing lost."""
    ef = ChromaSparseEmbeddingFunction(base_url=embed_server_url, batch_size=250, max_concurrency=1)
    assert [v[:2] for v in as_tuples(ef(corpus))] == [v[:2] for v in reference(corpus)]
    # 250 -> 413, 125 -> 413, then 62-63 are accepted; the next call starts from that size.
    before = ef.usage.requests
    ef(corpus[:100])
    assert ef.usage.requests - before == 2


async def test_async_split_after_a_real_413(embed_server_url: str, corpus: list[str]) -> None:
    """The async path splits on 413 the same way."""
    ef = ChromaSparseEmbeddingFunction(base_url=embed_server_url, batch_size=300)
    vectors = await ef.acall(corpus)
    assert [(v.indices, v.values) for v in vectors] == [v[:2] for v in reference(corpus)]
    await ef.aclose()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_429s_are_retried_with_the_servers_hint_until_done(
    embed_server_factory: object, corpus: list[str], mode: str
) -> None:
    """A server allowing 20 requests/s: 30 one-text batches all succeed, via real retries."""
    server: LocalServer = embed_server_factory(rate_limit="20/s")  # type: ignore[operator]
    ef = ChromaSparseEmbeddingFunction(
        base_url=server.url, batch_size=1, max_concurrency=8, max_retries=10
    )
    texts = corpus[:30]
    vectors = ef(texts) if mode == "sync" else asyncio.run(ef.acall(texts))
    assert [(v.indices, v.values) for v in vectors] == [v[:2] for v in reference(texts)]
    assert ef.usage.retries > 0
    assert ef.usage.texts == 30


def test_rate_limit_error_carries_the_hint_when_retries_run_out(
    embed_server_factory: object,
) -> None:
    """With no retries left, a real 429 becomes RateLimitError with the server's wait."""
    server: LocalServer = embed_server_factory(rate_limit="1/min")  # type: ignore[operator]
    ef = ChromaSparseEmbeddingFunction(base_url=server.url, max_retries=0)
    ef(["first request is allowed"])
    with pytest.raises(RateLimitError) as info:
        ef(["second is not"])
    assert info.value.status_code == 429
    assert info.value.retry_after is not None
    assert info.value.retry_after > 0


def test_wrong_key_is_an_authentication_error_without_the_key(
    embed_server_factory: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A keyed server refuses a wrong key with 401; neither key shows anywhere."""
    caplog.set_level(logging.DEBUG)
    server: LocalServer = embed_server_factory(api_key="the-right-key")  # type: ignore[operator]
    ef = ChromaSparseEmbeddingFunction(base_url=server.url, api_key=SECRET)
    with pytest.raises(AuthenticationError) as info:
        ef(["hello"])
    assert info.value.status_code == 401
    text = str(info.value) + repr(info.value) + "".join(r.getMessage() for r in caplog.records)
    assert SECRET not in text
    assert "the-right-key" not in text
    good = ChromaSparseEmbeddingFunction(base_url=server.url, api_key="the-right-key")
    assert good(["hello"])[0].indices


def test_unknown_model_reads_clearly(embed_server_url: str) -> None:
    """The server's 400 for an unknown model names the hosted models."""
    ef = ChromaSparseEmbeddingFunction(base_url=embed_server_url, model="acme/not-a-model")
    with pytest.raises(InvalidRequestError, match="not one of the hosted models"):
        ef(["hello"])


def test_every_hosted_sparse_model_is_served(embed_server_url: str) -> None:
    """All four sparse names work end to end, the -doc model querying with its twin."""
    for model in (
        "prithivida/Splade_PP_en_v1",
        "BAAI/bge-m3",
        "naver/efficient-splade-VI-BT-large-doc",
    ):
        ef = ChromaSparseEmbeddingFunction(base_url=embed_server_url, model=model)
        assert ef(["sparse retrieval"])[0].indices
        assert ef.embed_query(["sparse retrieval"])[0].indices


def test_unreachable_server_is_a_service_error_after_retries() -> None:
    """Nothing listening: ServiceError after the bounded retries (real, short backoff)."""
    ef = ChromaSparseEmbeddingFunction(base_url="http://127.0.0.1:9", max_retries=1)
    ef._sleep = lambda _: None
    with pytest.raises(ServiceError, match="could not reach"):
        ef(["hello"])
    assert ef.usage.requests == 2
