"""ChromaSparseEmbeddingFunction over httpx.MockTransport: sync and async, side by side."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from chromadb.base_types import SparseVector

from chroma_sparse_ef import (
    AuthenticationError,
    ChromaSparseEmbeddingFunction,
    ConfigurationError,
    InvalidInputError,
    InvalidRequestError,
    InvalidResponseError,
    MissingAPIKeyError,
    RateLimitError,
    ServiceError,
    UnsupportedModelError,
)

from .fake_service import FakeService, error, expected_vector

SECRET = "ck-planted-secret-do-not-leak"
URL = "https://embed.example.test"

Factory = Callable[..., ChromaSparseEmbeddingFunction]


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make(service: FakeService, sleeps: list[float]) -> Factory:
    """Build functions wired to the fake service, with sleeps recorded instead of slept."""

    def factory(**kwargs: Any) -> ChromaSparseEmbeddingFunction:
        kwargs.setdefault("api_key", SECRET)
        kwargs.setdefault("base_url", URL)
        ef = ChromaSparseEmbeddingFunction(
            http_client=httpx.Client(transport=httpx.MockTransport(service)),
            async_http_client=httpx.AsyncClient(transport=httpx.MockTransport(service)),
            **kwargs,
        )
        # A fake monotonic clock that only sleeping moves: waits are recorded, not slept.
        now = [1000.0]

        def fake_sleep(delay: float) -> None:
            sleeps.append(delay)
            now[0] += delay

        async def fake_async_sleep(delay: float) -> None:
            fake_sleep(delay)

        ef._sleep = fake_sleep
        ef._async_sleep = fake_async_sleep
        ef._core.monotonic = lambda: now[0]
        ef._core.random = lambda: 0.0
        return ef

    return factory


def texts(n: int) -> list[str]:
    """Distinct texts whose vectors differ, so misplacement is visible."""
    return [f"doc{i} word{i % 7} shared shared" for i in range(n)]


def assert_matches(vectors: list[SparseVector], inputs: list[str]) -> None:
    assert len(vectors) == len(inputs)
    for vec, text in zip(vectors, inputs, strict=True):
        idx, val, _ = expected_vector(text)
        assert (vec.indices, vec.values) == (idx, val), text


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def call(ef: ChromaSparseEmbeddingFunction, inputs: Any, mode: str, query: bool = False) -> Any:
    """Run the sync method, or its awaitable twin on a fresh loop."""
    if mode == "sync":
        return ef.embed_query(inputs) if query else ef(inputs)
    coro = ef.aembed_query(inputs) if query else ef.acall(inputs)
    return asyncio.run(coro)


class TestWireFormat:
    def test_headers_carry_token_and_model(
        self, make: Factory, service: FakeService, mode: str
    ) -> None:
        """x-chroma-token and x-chroma-embedding-model go on every request."""
        call(make(model="BAAI/bge-m3"), ["hello"], mode)
        (req,) = service.requests
        assert req.headers["x-chroma-token"] == SECRET
        assert req.headers["x-chroma-embedding-model"] == "BAAI/bge-m3"
        assert req.headers["content-type"] == "application/json"
        assert str(req.url) == URL + "/embed_sparse"

    def test_no_task_sends_empty_task_and_target(
        self, make: Factory, service: FakeService, mode: str
    ) -> None:
        """Documents and queries both send task "" and target "" without a task."""
        ef = make()
        call(ef, ["a"], mode)
        call(ef, ["a"], mode, query=True)
        for body in service.bodies:
            assert (body["task"], body["target"], body["fetch_labels"]) == ("", "", False)

    def test_task_sends_documents_and_query_targets(
        self, make: Factory, service: FakeService, mode: str
    ) -> None:
        """With a task, __call__ targets documents and embed_query targets query."""
        ef = make(task="retrieval")
        call(ef, ["a"], mode)
        call(ef, ["a"], mode, query=True)
        assert [(b["task"], b["target"]) for b in service.bodies] == [
            ("retrieval", "documents"),
            ("retrieval", "query"),
        ]

    def test_instructions_may_differ_per_side(
        self, make: Factory, service: FakeService, mode: str
    ) -> None:
        """Documents send `instructions`, queries `query_instructions`."""
        ef = make(
            instructions="Represent the document", query_instructions="Represent the question"
        )
        call(ef, ["a"], mode)
        call(ef, ["a"], mode, query=True)
        assert [b["instructions"] for b in service.bodies] == [
            "Represent the document",
            "Represent the question",
        ]
        assert all("task" not in b for b in service.bodies)

    def test_efficient_splade_queries_use_the_query_twin(
        self, make: Factory, service: FakeService, mode: str
    ) -> None:
        """The -doc model embeds queries with its -query twin automatically."""
        ef = make(model="naver/efficient-splade-VI-BT-large-doc")
        call(ef, ["a"], mode)
        call(ef, ["a"], mode, query=True)
        assert [r.headers["x-chroma-embedding-model"] for r in service.requests] == [
            "naver/efficient-splade-VI-BT-large-doc",
            "naver/efficient-splade-VI-BT-large-query",
        ]

    def test_query_model_can_be_overridden(self, make: Factory, service: FakeService) -> None:
        """An explicit query_model wins over the catalog's twin."""
        ef = make(model="naver/efficient-splade-VI-BT-large-doc", query_model="custom/q")
        ef.embed_query(["a"])
        assert service.requests[0].headers["x-chroma-embedding-model"] == "custom/q"

    def test_labels_come_back_aligned_when_fetched(self, make: Factory, mode: str) -> None:
        """fetch_labels=True fills labels, each with its own index after sorting."""
        (vec,) = call(make(fetch_labels=True), ["beta alpha beta"], mode)
        idx, val, lab = expected_vector("beta alpha beta")
        assert (vec.indices, vec.values, vec.labels) == (idx, val, lab)

    def test_unknown_model_names_are_sent_as_given(
        self, make: Factory, service: FakeService
    ) -> None:
        """Self-hosted servers may serve other models: names outside the catalog are accepted."""
        make(model="acme/sparse-xl")(["a"])
        assert service.requests[0].headers["x-chroma-embedding-model"] == "acme/sparse-xl"


class TestModels:
    def test_dense_only_model_is_refused_before_any_request(
        self, make: Factory, service: FakeService
    ) -> None:
        """Qwen3-Embedding is dense-only: UnsupportedModelError at construction, no request."""
        with pytest.raises(UnsupportedModelError, match=r"Qwen/Qwen3-Embedding-0\.6B"):
            make(model="Qwen/Qwen3-Embedding-0.6B")
        assert service.requests == []

    def test_dense_only_query_model_is_refused(self, make: Factory) -> None:
        """The check covers the query model too."""
        with pytest.raises(UnsupportedModelError):
            make(query_model="Qwen/Qwen3-Embedding-0.6B")

    def test_501_maps_to_unsupported_model_without_retry(
        self, make: Factory, service: FakeService, mode: str
    ) -> None:
        """A 501 from the service raises UnsupportedModelError at once."""
        service.script = [error(501, "sparse not supported")]
        with pytest.raises(UnsupportedModelError) as info:
            call(make(model="acme/dense"), ["a"], mode)
        assert info.value.status_code == 501
        assert len(service.requests) == 1


class TestBatchingAndConcurrency:
    def test_large_input_is_split_into_capped_batches_in_order(
        self, make: Factory, service: FakeService, mode: str
    ) -> None:
        """250 texts go as 100 + 100 + 50 and come back in input order."""
        inputs = texts(250)
        vectors = call(make(), inputs, mode)
        assert sorted(service.sizes) == [50, 100, 100]
        assert_matches(vectors, inputs)

    def test_batch_size_is_respected(self, make: Factory, service: FakeService, mode: str) -> None:
        """A smaller batch_size gives more, smaller requests."""
        inputs = texts(10)
        assert_matches(call(make(batch_size=3), inputs, mode), inputs)
        assert sorted(service.sizes) == [1, 3, 3, 3]

    def test_requests_overlap_up_to_max_concurrency(
        self, make: Factory, service: FakeService
    ) -> None:
        """Four batches with max_concurrency=4 are all in flight together (a barrier proves it)."""
        barrier = threading.Barrier(4, timeout=10)
        service.on_request = lambda body: barrier.wait()
        inputs = texts(40)
        assert_matches(make(batch_size=10, max_concurrency=4)(inputs), inputs)

    def test_in_flight_requests_never_exceed_max_concurrency(
        self, make: Factory, service: FakeService
    ) -> None:
        """No more than max_concurrency requests are open at once."""
        lock = threading.Lock()
        state = {"now": 0, "peak": 0}
        release = threading.Event()

        def script(request: httpx.Request, body: dict[str, Any]) -> None:
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
                if state["now"] == 3:
                    release.set()
            release.wait(timeout=10)
            with lock:
                state["now"] -= 1

        service.script = [script] * 12
        make(batch_size=1, max_concurrency=3)(texts(12))
        assert state["peak"] == 3

    async def test_async_requests_overlap_up_to_max_concurrency(
        self, make: Factory, service: FakeService
    ) -> None:
        """The async path keeps max_concurrency requests in flight too."""
        inputs = texts(30)
        ef = make(batch_size=10, max_concurrency=3)
        vectors = await ef.acall(inputs)
        assert_matches(vectors, inputs)
        assert len(service.requests) == 3

    def test_413_halves_the_batch_until_the_service_accepts(
        self, make: Factory, service: FakeService, mode: str
    ) -> None:
        """A service capped at 30 still embeds 100 texts, by splitting 100 -> 50 -> 25."""
        service.cap = 30
        inputs = texts(100)
        ef = make(max_concurrency=1)
        assert_matches(call(ef, inputs, mode), inputs)
        assert service.sizes[:3] == [100, 50, 25]
        assert sum(s for s in service.sizes if s <= 30) == 100

    def test_after_a_413_later_calls_start_from_the_size_that_worked(
        self, make: Factory, service: FakeService
    ) -> None:
        """The learned cap saves the next call from repeating the 413s."""
        service.cap = 30
        ef = make(max_concurrency=1)
        ef(texts(100))
        service.requests.clear()
        service.bodies.clear()
        ef(texts(50))
        assert max(service.sizes) <= 30

    def test_413_on_a_single_text_is_an_invalid_request(
        self, make: Factory, service: FakeService, mode: str
    ) -> None:
        """One text too large for the service cannot be split: InvalidRequestError."""
        service.cap = 0
        with pytest.raises(InvalidRequestError, match="413"):
            call(make(), ["one huge text"], mode)

    def test_first_failing_batch_fails_the_call(
        self, make: Factory, service: FakeService, mode: str
    ) -> None:
        """A failure in any batch raises; nothing partial is returned."""
        service.script = [error(400, "bad")]
        with pytest.raises(InvalidRequestError):
            call(make(batch_size=5, max_concurrency=1), texts(20), mode)


class TestRetries:
    def test_transient_failures_are_retried_with_backoff(
        self, make: Factory, service: FakeService, sleeps: list[float], mode: str
    ) -> None:
        """Two 503s then success: the call succeeds after sleeping 0.5 s then 1 s."""
        service.script = [error(503), error(503)]
        assert_matches(call(make(), ["a b"], mode), ["a b"])
        assert sleeps == [0.5, 1.0]
        assert len(service.requests) == 3

    def test_retries_are_bounded(
        self, make: Factory, service: FakeService, sleeps: list[float], mode: str
    ) -> None:
        """max_retries=2: three attempts, then ServiceError carrying the status."""
        service.script = [error(502, "bad gateway")] * 5
        with pytest.raises(ServiceError) as info:
            call(make(), ["a"], mode)
        assert info.value.status_code == 502
        assert info.value.error == "bad gateway"
        assert len(service.requests) == 3
        assert len(sleeps) == 2

    def test_retry_after_ms_is_honoured(
        self, make: Factory, service: FakeService, sleeps: list[float], mode: str
    ) -> None:
        """The service's hint replaces the backoff."""
        service.script = [error(429, headers={"retry-after-ms": "1500"})]
        call(make(), ["a"], mode)
        assert sleeps == [1.5]

    def test_retry_after_http_date_is_honoured(
        self, make: Factory, service: FakeService, sleeps: list[float]
    ) -> None:
        """An HTTP-date hint waits until that moment (clock injected)."""
        ef = make()
        ef._core.clock = lambda: 1_700_000_000.0
        service.script = [error(503, headers={"retry-after": "Tue, 14 Nov 2023 22:13:24 GMT"})]
        ef(["a"])
        assert sleeps == [4.0]

    def test_hint_past_the_cap_raises_rate_limit_error_at_once(
        self, make: Factory, service: FakeService, sleeps: list[float], mode: str
    ) -> None:
        """A 3600 s hint is not slept on: RateLimitError carries it."""
        service.script = [error(429, "slow down", headers={"retry-after": "3600"})]
        with pytest.raises(RateLimitError) as info:
            call(make(), ["a"], mode)
        assert info.value.retry_after == 3600.0
        assert sleeps == []
        assert len(service.requests) == 1

    def test_429_after_all_retries_is_a_rate_limit_error(
        self, make: Factory, service: FakeService, mode: str
    ) -> None:
        """Persistent 429s end in RateLimitError."""
        service.script = [error(429, headers={"retry-after": "1"})] * 3
        with pytest.raises(RateLimitError) as info:
            call(make(), ["a"], mode)
        assert info.value.status_code == 429

    @pytest.mark.parametrize(
        ("status", "cls"),
        [(400, InvalidRequestError), (401, AuthenticationError), (501, UnsupportedModelError)],
    )
    def test_permanent_errors_are_never_retried(
        self,
        make: Factory,
        service: FakeService,
        sleeps: list[float],
        status: int,
        cls: type[Exception],
        mode: str,
    ) -> None:
        """400, 401 and 501 raise after one request."""
        service.script = [error(status)]
        with pytest.raises(cls):
            call(make(), ["a"], mode)
        assert len(service.requests) == 1
        assert sleeps == []

    def test_connection_errors_are_retried_then_raise_service_error(
        self, make: Factory, service: FakeService, sleeps: list[float], mode: str
    ) -> None:
        """A refused connection is retried, then reported as ServiceError without status."""

        def refuse(request: httpx.Request, body: dict[str, Any]) -> None:
            raise httpx.ConnectError("refused", request=request)

        service.script = [refuse] * 3
        with pytest.raises(ServiceError, match="could not reach") as info:
            call(make(), ["a"], mode)
        assert info.value.status_code is None
        assert len(sleeps) == 2

    def test_timeouts_are_retried_and_recover(
        self, make: Factory, service: FakeService, mode: str
    ) -> None:
        """A timeout followed by success returns the vectors."""

        def time_out(request: httpx.Request, body: dict[str, Any]) -> None:
            raise httpx.ReadTimeout("slow", request=request)

        service.script = [time_out]
        assert_matches(call(make(), ["a"], mode), ["a"])

    def test_invalid_response_is_not_retried(
        self, make: Factory, service: FakeService, mode: str
    ) -> None:
        """A malformed 200 raises InvalidResponseError once; it is not a transient fault."""
        service.script = [httpx.Response(200, json={"embeddings": [], "num_tokens": 0})]
        with pytest.raises(InvalidResponseError, match="sent 1 texts but got 0"):
            call(make(), ["a"], mode)
        assert len(service.requests) == 1


class TestUsage:
    def test_tokens_texts_and_requests_are_accumulated(
        self, make: Factory, service: FakeService, mode: str
    ) -> None:
        """num_tokens from every response adds up."""
        ef = make(batch_size=2)
        call(ef, ["a b", "c", "d e f"], mode)
        usage = ef.usage
        assert (usage.requests, usage.texts, usage.tokens, usage.retries) == (2, 3, 6, 0)

    def test_retries_are_counted(self, make: Factory, service: FakeService) -> None:
        """A retried request counts as a request and a retry."""
        service.script = [error(503)]
        ef = make()
        ef(["a"])
        assert (ef.usage.requests, ef.usage.retries) == (2, 1)

    def test_usage_is_exact_under_threads(self, make: Factory) -> None:
        """Eight threads sharing one instance lose no count."""
        ef = make(batch_size=3)
        threads = [threading.Thread(target=ef, args=(texts(10),)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert ef.usage.texts == 80
        assert ef.usage.requests == 8 * 4

    def test_reset_returns_and_clears(self, make: Factory) -> None:
        """reset_usage hands back the totals and starts from zero."""
        ef = make()
        ef(["a b"])
        assert ef.reset_usage().tokens == 2
        assert ef.usage.tokens == 0


class TestInputValidation:
    @pytest.mark.parametrize(
        ("bad", "fragment"),
        [
            (None, "NoneType"),
            ("a bare string", "single string"),
            (b"bytes", "bytes"),
            ([], "empty"),
            (["ok", 3], "input[1] is int"),
            (["ok", b"raw"], "decode bytes"),
            ([None], "input[0] is NoneType"),
            (42, "int"),
            ({"a": 1}, "dict"),
        ],
    )
    def test_bad_input_raises_before_any_request(
        self, make: Factory, service: FakeService, bad: Any, fragment: str, mode: str
    ) -> None:
        """None, bare strings, bytes, non-str items and empty lists are refused up front."""
        with pytest.raises(
            InvalidInputError, match=fragment.replace("[", r"\[").replace("]", r"\]")
        ):
            call(make(), bad, mode)
        assert service.requests == []

    def test_tuples_and_generators_are_accepted(self, make: Factory) -> None:
        """Any iterable of strings works, not only lists."""
        ef = make()
        assert len(ef(("a", "b"))) == 2  # type: ignore[arg-type]
        assert len(ef(t for t in ["a"])) == 1  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"batch_size": 0},
            {"batch_size": True},
            {"max_concurrency": 0},
            {"max_retries": -1},
            {"timeout": 0},
            {"timeout": "60"},
            {"model": ""},
            {"fetch_labels": "yes"},
            {"base_url": "ftp://x"},
            {"task": "t", "instructions": "i"},
            {"api_key": 123},
        ],
    )
    def test_bad_settings_raise_configuration_error(
        self, make: Factory, kwargs: dict[str, Any]
    ) -> None:
        """Bad constructor arguments are ConfigurationError, raised at once."""
        with pytest.raises(ConfigurationError):
            make(**kwargs)


class TestSecrets:
    def test_key_never_appears_in_repr_config_errors_or_logs(
        self, make: Factory, service: FakeService, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The planted key is absent from repr, config, error text and every log record."""
        caplog.set_level(logging.DEBUG)
        service.script = [error(503, f"upstream saw {SECRET}"), error(401, f"bad token {SECRET}")]
        ef = make()
        with pytest.raises(AuthenticationError) as info:
            ef(["a"])
        seen = [
            repr(ef),
            str(ef.get_config()),
            str(info.value),
            repr(info.value),
            str(info.value.error),
        ]
        seen += [r.getMessage() for r in caplog.records]
        assert caplog.records, "retries should have been logged"
        assert all(SECRET not in s for s in seen)

    def test_missing_key_names_the_env_var(self) -> None:
        """No key anywhere: MissingAPIKeyError naming the variable to set."""
        with pytest.raises(MissingAPIKeyError, match="MY_SPARSE_KEY"):
            ChromaSparseEmbeddingFunction(api_key_env_var="MY_SPARSE_KEY")

    def test_key_is_read_from_the_env_var(
        self, monkeypatch: pytest.MonkeyPatch, service: FakeService
    ) -> None:
        """With no explicit key, the env var supplies it."""
        monkeypatch.setenv("MY_SPARSE_KEY", "from-env")
        ef = ChromaSparseEmbeddingFunction(
            api_key_env_var="MY_SPARSE_KEY",
            base_url=URL,
            http_client=httpx.Client(transport=httpx.MockTransport(service)),
        )
        ef(["a"])
        assert service.requests[0].headers["x-chroma-token"] == "from-env"

    def test_explicit_key_wins_over_the_env_var(
        self, monkeypatch: pytest.MonkeyPatch, service: FakeService
    ) -> None:
        """An explicit api_key beats the environment."""
        monkeypatch.setenv("CHROMA_API_KEY", "from-env")
        ef = ChromaSparseEmbeddingFunction(
            api_key="explicit",
            base_url=URL,
            http_client=httpx.Client(transport=httpx.MockTransport(service)),
        )
        ef(["a"])
        assert service.requests[0].headers["x-chroma-token"] == "explicit"

    def test_loopback_server_needs_no_key(self, service: FakeService) -> None:
        """A local server on 127.0.0.1 works without a key; a non-secret placeholder is sent."""
        ef = ChromaSparseEmbeddingFunction(
            base_url="http://127.0.0.1:8000",
            http_client=httpx.Client(transport=httpx.MockTransport(service)),
        )
        ef(["a"])
        assert service.requests[0].headers["x-chroma-token"] == "local-no-key"

    def test_base_url_env_var_is_used(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """CHROMA_EMBED_URL points the function at another server, as chromadb's do."""
        monkeypatch.setenv("CHROMA_EMBED_URL", "http://localhost:9999/")
        assert ChromaSparseEmbeddingFunction().base_url == "http://localhost:9999"

    def test_credentials_in_base_url_are_refused_without_echoing_them(self) -> None:
        """user:password in a URL would be persisted and logged: refused, never printed."""
        with pytest.raises(ConfigurationError, match="credentials") as info:
            ChromaSparseEmbeddingFunction(
                api_key="k", base_url="https://user:pw@embed.example.test"
            )
        assert "pw" not in str(info.value)

    def test_request_repr_never_shows_the_key(self, make: Factory) -> None:
        """Tracebacks that print locals (pytest -l, Sentry) show requests without the key."""
        ef = make()
        assert SECRET not in repr(ef._core.requests["documents"])
        assert SECRET not in repr(ef._core.requests["query"])


class TestLifecycle:
    def test_close_leaves_injected_clients_open(self, service: FakeService) -> None:
        """A client passed in belongs to the caller."""
        client = httpx.Client(transport=httpx.MockTransport(service))
        with ChromaSparseEmbeddingFunction(api_key="k", base_url=URL, http_client=client) as ef:
            ef(["a"])
        assert not client.is_closed

    def test_close_closes_the_owned_client_and_reopens_on_use(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """close() releases connections; a later call opens a new client."""
        ef = ChromaSparseEmbeddingFunction(base_url="http://127.0.0.1:1")
        client = ef._http()
        ef.close()
        assert client.is_closed
        assert ef._http() is not client

    def test_async_client_follows_the_event_loop(self) -> None:
        """Each asyncio.run gets its own AsyncClient: connections never cross loops."""
        ef = ChromaSparseEmbeddingFunction(base_url="http://127.0.0.1:1")

        async def grab() -> httpx.AsyncClient:
            return ef._ahttp()

        first = asyncio.run(grab())
        second = asyncio.run(grab())
        assert first is not second


class TestReviewFindings:
    """Failures found in review, each pinned so it cannot come back."""

    def test_one_oversized_text_does_not_shrink_later_batches(
        self, make: Factory, service: FakeService
    ) -> None:
        """A text the service refuses fails its call; the next call still sends 100 a request."""

        def refuse_huge(request: httpx.Request, body: dict[str, Any]) -> httpx.Response | None:
            if any(t == "HUGE" for t in body["texts"]):
                return error(413, "payload too large")
            return None

        ef = make(max_concurrency=1)
        service.script = [refuse_huge] * 20
        with pytest.raises(InvalidRequestError, match="413"):
            ef([*texts(99), "HUGE"])
        service.script.clear()
        service.requests.clear()
        service.bodies.clear()
        ef(texts(250))
        assert service.sizes == [100, 100, 50]

    def test_interrupting_a_sync_call_cancels_the_batches_not_started(
        self, make: Factory, service: FakeService, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Ctrl-C while waiting: queued batches never start (only those in flight finish)."""
        import chroma_sparse_ef._embedding_function as module

        def interrupted(*args: Any, **kwargs: Any) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(module, "wait", interrupted)
        with pytest.raises(KeyboardInterrupt):
            make(batch_size=1, max_concurrency=2)(texts(60))
        assert len(service.requests) <= 30

    def test_text_that_is_not_valid_unicode_is_refused_before_any_request(
        self, make: Factory, service: FakeService, mode: str
    ) -> None:
        """A lone surrogate (from bytes decoded with surrogateescape) is an InvalidInputError."""
        with pytest.raises(InvalidInputError, match="lone surrogate"):
            call(make(), ["fine", "caf\udce9"], mode)
        assert service.requests == []

    def test_close_keeps_using_the_client_passed_in(self, service: FakeService) -> None:
        """After close(), calls still go through the caller's client, not a default one."""
        client = httpx.Client(transport=httpx.MockTransport(service))
        ef = ChromaSparseEmbeddingFunction(api_key="k", base_url=URL, http_client=client)
        ef.close()
        ef(["a"])
        assert ef._http() is client
        assert len(service.requests) == 1

    async def test_one_loop_reuses_one_async_client(self) -> None:
        """Calls on one event loop share a client; aclose() releases it."""
        ef = ChromaSparseEmbeddingFunction(base_url="http://127.0.0.1:1")
        first = ef._ahttp()
        assert ef._ahttp() is first
        await ef.aclose()
        assert first.is_closed
        assert ef._ahttp() is not first
        await ef.aclose()

    async def test_async_requests_really_overlap(self) -> None:
        """Three batches with max_concurrency=3 are in flight together on the loop."""
        in_flight = 0
        all_in = asyncio.Event()

        async def handler(request: httpx.Request) -> httpx.Response:
            nonlocal in_flight
            in_flight += 1
            if in_flight == 3:
                all_in.set()
            await asyncio.wait_for(all_in.wait(), timeout=10)
            return FakeService().answer(request, orjson.loads(request.content))

        ef = ChromaSparseEmbeddingFunction(
            api_key="k",
            base_url=URL,
            batch_size=10,
            max_concurrency=3,
            async_http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        )
        inputs = texts(30)
        assert_matches(await ef.acall(inputs), inputs)
