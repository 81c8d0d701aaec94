"""The app in-process over httpx.ASGITransport: every status the spec lists, and headers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from chroma_sparse_ef import ConfigurationError
from chroma_sparse_ef.server import create_app
from chroma_sparse_ef.server._security import ApiKey, is_loopback, warn_if_exposed

SECRET = "sk-planted-secret-0123456789"
MODEL = "prithivida/Splade_PP_en_v1"
HEADERS = {"x-chroma-token": "any", "x-chroma-embedding-model": MODEL}
BODY: dict[str, Any] = {"texts": ["Sparse vectors match exact terms."], "task": "", "target": ""}

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client_for() -> ClientFactory:
    """Build an app with the given options and an httpx client talking to it in-process."""

    @asynccontextmanager
    async def make(**options: Any) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=create_app(**options))
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
            yield client

    return make


def _assert_error(response: httpx.Response, status: int) -> str:
    """The response is `status` with exactly an {"error": str} JSON body; returns the text."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str)
    assert body["error"]
    return str(body["error"])


async def test_embeds_texts_with_spec_shaped_response(client_for: ClientFactory) -> None:
    """200: one item per text with int indices and float values, num_tokens, backend header."""
    async with client_for() as client:
        response = await client.post(
            "/embed_sparse", headers=HEADERS, json={**BODY, "texts": ["alpha beta", "gamma"]}
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-chroma-sparse-ef-backend"] == "bm25"
    body = response.json()
    assert set(body) == {"embeddings", "num_tokens"}
    assert [len(e["indices"]) for e in body["embeddings"]] == [2, 1]
    assert body["num_tokens"] == 3
    for item in body["embeddings"]:
        assert "labels" not in item
        assert all(isinstance(i, int) for i in item["indices"])
        assert all(isinstance(v, float) for v in item["values"])


async def test_labels_are_returned_only_when_fetch_labels_is_true(
    client_for: ClientFactory,
) -> None:
    """fetch_labels true: stems aligned with indices; false or absent: no labels."""
    async with client_for() as client:
        with_labels = await client.post(
            "/embed_sparse", headers=HEADERS, json={**BODY, "fetch_labels": True}
        )
        without = await client.post(
            "/embed_sparse", headers=HEADERS, json={**BODY, "fetch_labels": False}
        )
    item = with_labels.json()["embeddings"][0]
    assert sorted(item["labels"]) == ["exact", "match", "spars", "term", "vector"]
    assert len(item["labels"]) == len(item["indices"])
    assert "labels" not in without.json()["embeddings"][0]


async def test_task_and_target_as_chromadb_sends_them_are_accepted(
    client_for: ClientFactory,
) -> None:
    """chromadb's client body (task "", target "", fetch_tokens as a string) gets a 200."""
    body = {"texts": ["hello world"], "task": "", "target": "", "fetch_tokens": "true"}
    async with client_for() as client:
        response = await client.post("/embed_sparse", headers=HEADERS, json=body)
    assert response.status_code == 200
    assert "labels" not in response.json()["embeddings"][0]


async def test_empty_texts_give_empty_embeddings(client_for: ClientFactory) -> None:
    """texts [] is valid: no embeddings, no tokens."""
    async with client_for() as client:
        response = await client.post("/embed_sparse", headers=HEADERS, json={**BODY, "texts": []})
    assert response.json() == {"embeddings": [], "num_tokens": 0}


async def test_stopword_only_text_gives_an_empty_item(client_for: ClientFactory) -> None:
    """A text BM25 finds no terms in is a valid, empty item, not an error."""
    async with client_for() as client:
        response = await client.post(
            "/embed_sparse", headers=HEADERS, json={**BODY, "texts": ["the of and"]}
        )
    assert response.json() == {"embeddings": [{"indices": [], "values": []}], "num_tokens": 0}


class TestAuthentication:
    async def test_missing_token_is_401_even_without_a_key(self, client_for: ClientFactory) -> None:
        """The spec requires x-chroma-token; without a key any value passes, none does not."""
        async with client_for() as client:
            response = await client.post(
                "/embed_sparse", headers={"x-chroma-embedding-model": MODEL}, json=BODY
            )
        assert "x-chroma-token" in _assert_error(response, 401)

    async def test_any_token_is_accepted_without_a_key(self, client_for: ClientFactory) -> None:
        """No key configured: any token value, even empty, is accepted."""
        async with client_for() as client:
            response = await client.post(
                "/embed_sparse", headers={**HEADERS, "x-chroma-token": ""}, json=BODY
            )
        assert response.status_code == 200

    @pytest.mark.parametrize("token", [None, "", "wrong", SECRET + "x", SECRET[:-1]])
    async def test_with_a_key_a_missing_or_wrong_token_is_401(
        self, client_for: ClientFactory, token: str | None
    ) -> None:
        """With a key, only the exact key gets through."""
        headers = {"x-chroma-embedding-model": MODEL}
        if token is not None:
            headers["x-chroma-token"] = token
        async with client_for(api_key=SECRET) as client:
            response = await client.post("/embed_sparse", headers=headers, json=BODY)
        assert SECRET not in _assert_error(response, 401)

    async def test_with_a_key_the_right_token_is_200(self, client_for: ClientFactory) -> None:
        """The configured key authenticates."""
        async with client_for(api_key=SECRET) as client:
            response = await client.post(
                "/embed_sparse", headers={**HEADERS, "x-chroma-token": SECRET}, json=BODY
            )
        assert response.status_code == 200

    async def test_auth_is_checked_before_the_model(self, client_for: ClientFactory) -> None:
        """An unauthenticated client learns nothing about models: 401 before 400/501."""
        async with client_for(api_key=SECRET) as client:
            response = await client.post(
                "/embed_sparse",
                headers={"x-chroma-token": "bad", "x-chroma-embedding-model": "nope"},
                json=BODY,
            )
        _assert_error(response, 401)


class TestModelHeader:
    async def test_missing_model_header_is_400(self, client_for: ClientFactory) -> None:
        """No x-chroma-embedding-model: 400."""
        async with client_for() as client:
            response = await client.post(
                "/embed_sparse", headers={"x-chroma-token": "t"}, json=BODY
            )
        assert "x-chroma-embedding-model" in _assert_error(response, 400)

    async def test_unknown_model_is_400(self, client_for: ClientFactory) -> None:
        """A model the service does not host: 400 naming the supported ones."""
        async with client_for() as client:
            response = await client.post(
                "/embed_sparse", headers={**HEADERS, "x-chroma-embedding-model": "x/y"}, json=BODY
            )
        assert "BAAI/bge-m3" in _assert_error(response, 400)

    async def test_dense_only_qwen_is_501(self, client_for: ClientFactory) -> None:
        """Qwen3-Embedding is dense-only: 501."""
        headers = {**HEADERS, "x-chroma-embedding-model": "Qwen/Qwen3-Embedding-0.6B"}
        async with client_for() as client:
            response = await client.post("/embed_sparse", headers=headers, json=BODY)
        assert "dense-only" in _assert_error(response, 501)

    @pytest.mark.parametrize(
        "model",
        [
            "BAAI/bge-m3",
            "prithivida/Splade_PP_en_v1",
            "naver/efficient-splade-VI-BT-large-doc",
            "naver/efficient-splade-VI-BT-large-query",
        ],
    )
    async def test_every_sparse_model_is_served(
        self, client_for: ClientFactory, model: str
    ) -> None:
        """All four sparse model names answer 200."""
        async with client_for() as client:
            response = await client.post(
                "/embed_sparse", headers={**HEADERS, "x-chroma-embedding-model": model}, json=BODY
            )
        assert response.status_code == 200


class TestInvalidBodies:
    @pytest.mark.parametrize(
        "content",
        [
            b"{not json",
            b"",
            b"[]",
            b'{"texts": "one"}',
            b'{"texts": ["a"], "fetch_labels": "yes", "task": "", "target": ""}',
            b'{"texts": ["a"]}',
        ],
    )
    async def test_invalid_bodies_are_400_with_error_never_422(
        self, client_for: ClientFactory, content: bytes
    ) -> None:
        """Bad JSON, wrong types, missing fields: 400 {"error"}, not FastAPI's 422 detail."""
        async with client_for() as client:
            response = await client.post(
                "/embed_sparse",
                headers={**HEADERS, "content-type": "application/json"},
                content=content,
            )
        _assert_error(response, 400)

    async def test_more_than_100_texts_is_413(self, client_for: ClientFactory) -> None:
        """101 texts: 413, as the hosted service answers."""
        async with client_for() as client:
            response = await client.post(
                "/embed_sparse", headers=HEADERS, json={**BODY, "texts": ["a"] * 101}
            )
        _assert_error(response, 413)

    async def test_body_over_the_byte_limit_by_content_length_is_413(
        self, client_for: ClientFactory
    ) -> None:
        """A declared Content-Length over the limit is refused before reading."""
        async with client_for(max_body_bytes=1000) as client:
            response = await client.post(
                "/embed_sparse", headers=HEADERS, json={**BODY, "texts": ["word " * 400]}
            )
        assert "too large" in _assert_error(response, 413)

    async def test_chunked_body_over_the_limit_is_413_while_reading(
        self, client_for: ClientFactory
    ) -> None:
        """Without Content-Length the size is counted while reading, and refused past it."""
        chunks_sent = 0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal chunks_sent
            yield b'{"task": "", "target": "", "texts": ["'
            for _ in range(100):
                chunks_sent += 1
                yield b"x" * 100
            yield b'"]}'

        async with client_for(max_body_bytes=1000) as client:
            response = await client.post("/embed_sparse", headers=HEADERS, content=chunks())
        assert "content-length" not in response.request.headers
        _assert_error(response, 413)

    async def test_text_over_the_character_limit_is_413(self, client_for: ClientFactory) -> None:
        """A single huge text is refused before any embedding work."""
        async with client_for(max_text_chars=10) as client:
            response = await client.post(
                "/embed_sparse", headers=HEADERS, json={**BODY, "texts": ["x" * 11]}
            )
        _assert_error(response, 413)


class TestRateLimit:
    async def test_over_the_rate_is_429_with_retry_after_headers(
        self, client_for: ClientFactory
    ) -> None:
        """Past the per-token rate: 429 with Retry-After (s) and retry-after-ms."""
        async with client_for(rate_limit="2/min") as client:
            codes = [
                (await client.post("/embed_sparse", headers=HEADERS, json=BODY)).status_code
                for _ in range(2)
            ]
            limited = await client.post("/embed_sparse", headers=HEADERS, json=BODY)
        assert codes == [200, 200]
        _assert_error(limited, 429)
        assert limited.headers["retry-after"] == "30"
        assert 29_000 < int(limited.headers["retry-after-ms"]) <= 30_000

    async def test_the_rate_is_per_token(self, client_for: ClientFactory) -> None:
        """Another token still has its full allowance."""
        async with client_for(rate_limit="1/min") as client:
            await client.post("/embed_sparse", headers=HEADERS, json=BODY)
            other = await client.post(
                "/embed_sparse", headers={**HEADERS, "x-chroma-token": "other"}, json=BODY
            )
        assert other.status_code == 200


class TestOtherRoutes:
    async def test_healthz_reports_backends_and_routes(self, client_for: ClientFactory) -> None:
        """/healthz names the backend, says what it is, and which backend serves each model."""
        async with client_for(api_key=SECRET, rate_limit="5/s") as client:
            response = await client.get("/healthz")
        body = response.json()
        assert body["status"] == "ok"
        assert [b["name"] for b in body["backends"]] == ["bm25"]
        assert "NOT SPLADE" in body["backends"][0]["description"]
        assert body["models"]["BAAI/bge-m3"] == "bm25"
        assert body["models"]["Qwen/Qwen3-Embedding-0.6B"] is None
        assert body["auth"] is True
        assert body["rate_limit"] == "5/s"
        assert SECRET not in response.text

    async def test_unknown_path_and_wrong_method_use_the_error_shape(
        self, client_for: ClientFactory
    ) -> None:
        """404 and 405 are {"error"} too; 405 keeps its Allow header."""
        async with client_for() as client:
            missing = await client.get("/nope")
            wrong_method = await client.get("/embed_sparse")
        _assert_error(missing, 404)
        _assert_error(wrong_method, 405)
        assert wrong_method.headers["allow"] == "POST"


class TestConfiguration:
    @pytest.mark.parametrize(
        "options",
        [
            {"api_key": ""},
            {"rate_limit": "often"},
            {"latency_ms": -1},
            {"latency_ms": float("nan")},
            {"max_body_bytes": 0},
            {"max_text_chars": 0},
        ],
    )
    def test_invalid_options_are_configuration_errors(self, options: dict[str, Any]) -> None:
        """Bad options fail when the app is built, not on the first request."""
        with pytest.raises(ConfigurationError):
            create_app(**options)


class TestSecretHygiene:
    def test_the_key_never_reaches_logs_bodies_or_reprs(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A planted key appears in no log record, response, or repr, at DEBUG level."""
        caplog.set_level(logging.DEBUG)
        app = create_app(api_key=SECRET, rate_limit="1/min")
        seen: list[str] = []
        with TestClient(app) as client:  # a context manager, so startup logging runs
            for token in (SECRET, SECRET, "wrong"):
                response = client.post(
                    "/embed_sparse", headers={**HEADERS, "x-chroma-token": token}, json=BODY
                )
                seen += [response.text, str(response.headers)]
            seen.append(client.get("/healthz").text)
        assert "any x-chroma-token" not in caplog.text
        assert "API key required" in caplog.text
        assert SECRET not in caplog.text
        assert all(SECRET not in text for text in seen)
        assert SECRET not in repr(ApiKey(SECRET))
        assert SECRET not in orjson.dumps(app.openapi()).decode()

    def test_startup_log_announces_bm25_honestly(self, caplog: pytest.LogCaptureFixture) -> None:
        """The startup log says which backend serves which model, and that it is not SPLADE."""
        caplog.set_level(logging.INFO, logger="chroma_sparse_ef.server")
        with TestClient(create_app()):
            pass
        assert "backend 'bm25' serves" in caplog.text
        assert "NOT SPLADE" in caplog.text
        assert "answering 501 for Qwen/Qwen3-Embedding-0.6B" in caplog.text


class TestExposure:
    @pytest.mark.parametrize(
        ("host", "loopback"),
        [
            ("127.0.0.1", True),
            ("127.1.2.3", True),
            ("localhost", True),
            ("::1", True),
            ("[::1]", True),
            ("0.0.0.0", False),
            ("::", False),
            ("192.168.1.10", False),
            ("example.com", False),
        ],
    )
    def test_is_loopback(self, host: str, loopback: bool) -> None:
        """Only localhost and loopback addresses count as loopback."""
        assert is_loopback(host) is loopback

    def test_warns_on_non_loopback_without_a_key(self, caplog: pytest.LogCaptureFixture) -> None:
        """0.0.0.0 without a key warns; with a key, or on loopback, it does not."""
        caplog.set_level(logging.WARNING, logger="chroma_sparse_ef.server")
        assert warn_if_exposed("0.0.0.0", has_api_key=False)
        assert not warn_if_exposed("0.0.0.0", has_api_key=True)
        assert not warn_if_exposed("127.0.0.1", has_api_key=False)
        assert len(caplog.records) == 1
        assert "not a loopback address" in caplog.records[0].getMessage()
