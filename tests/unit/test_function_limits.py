"""Throttling shared by an instance, the response cap, timeouts and the key rule (issues 8, 9).

Over httpx.MockTransport with a fake clock that only sleeping moves: nothing sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from chroma_sparse_ef import (
    ChromaSparseEmbeddingFunction,
    ConfigurationError,
    InvalidResponseError,
    MissingAPIKeyError,
    RateLimitError,
)
from chroma_sparse_ef._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    RESPONSE_BYTES_BASE,
    RESPONSE_BYTES_PER_TEXT,
)

from .fake_service import FakeService, error

SECRET = "ck-planted-secret-limits"
URL = "https://embed.example.test"


class Clock:
    """A monotonic clock that only the fake sleeps move; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay

    async def asleep(self, delay: float) -> None:
        self.sleep(delay)


def build(handler: Any, clock: Clock, **kwargs: Any) -> ChromaSparseEmbeddingFunction:
    kwargs.setdefault("api_key", SECRET)
    kwargs.setdefault("base_url", URL)
    ef = ChromaSparseEmbeddingFunction(
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
        async_http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        **kwargs,
    )
    ef._sleep = clock.sleep
    ef._async_sleep = clock.asleep
    ef._core.monotonic = lambda: clock.now
    ef._core.random = lambda: 0.0
    return ef


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def call(ef: ChromaSparseEmbeddingFunction, texts: list[str], mode: str) -> Any:
    if mode == "sync":
        return ef(texts)
    return asyncio.run(ef.acall(texts))


def limited(ms: int) -> httpx.Response:
    return error(429, "slow down", headers={"retry-after-ms": str(ms)})


class TestSharedThrottle:
    def test_a_429_makes_the_next_call_of_the_instance_wait_too(self, mode: str) -> None:
        """A 429 with a 5 s hint that ends one call still holds back the next call's request."""
        clock = Clock()
        service = FakeService(script=[limited(5000)])
        starts: list[float] = []
        service.on_request = lambda body: starts.append(clock.now)
        ef = build(service, clock, max_retries=0)
        with pytest.raises(RateLimitError):
            call(ef, ["a"], mode)
        call(ef, ["b"], mode)
        assert starts[1] - starts[0] >= 5.0
        assert ef.usage.rate_limited == 1

    def test_after_a_429_requests_are_paced(self, mode: str) -> None:
        """Once throttled, batches start no closer than 1/rate apart, although 4 may run."""
        clock = Clock()
        service = FakeService(script=[limited(200)])
        starts: list[float] = []
        service.on_request = lambda body: starts.append(clock.now)
        ef = build(service, clock, batch_size=1, max_concurrency=1)
        call(ef, ["a", "b", "c", "d"], mode)
        rate = ef._core.throttle.rate
        gaps = [b - a for a, b in itertools.pairwise(starts[1:])]
        assert all(gap >= 1.0 / rate * 0.9 for gap in gaps), gaps
        assert ef.usage.texts == 4

    def test_usage_reports_429s_and_throttled_time(self, mode: str) -> None:
        """Two 429s (1.5 s, then 0.5 s hints) are counted, with their waits."""
        clock = Clock()
        service = FakeService(script=[limited(1500), limited(500)])
        ef = build(service, clock)
        call(ef, ["a"], mode)
        usage = ef.usage
        assert usage.rate_limited == 2
        assert usage.retries == 2
        assert usage.throttled_seconds >= 2.0

    def test_without_429s_nothing_waits(self, mode: str) -> None:
        """A service that never throttles: no sleep, no throttled time, 20 requests."""
        clock = Clock()
        ef = build(FakeService(), clock, batch_size=5)
        call(ef, [f"t{i}" for i in range(100)], mode)
        assert clock.sleeps == []
        assert ef.usage.throttled_seconds == 0.0
        assert ef.usage.requests == 20


def _endless(chunk: bytes, served: list[int], most: int) -> Iterator[bytes]:
    sent = 0
    while sent < most:
        served.append(len(chunk))
        sent += len(chunk)
        yield chunk


async def _aendless(chunk: bytes, served: list[int], most: int) -> AsyncIterator[bytes]:
    for piece in _endless(chunk, served, most):
        yield piece


class TestResponseCap:
    def test_a_body_past_the_cap_raises_without_being_read_whole(self, mode: str) -> None:
        """A 2xx that keeps streaming: reading stops just past the cap, InvalidResponseError."""
        cap = RESPONSE_BYTES_BASE + RESPONSE_BYTES_PER_TEXT
        served: list[int] = []
        chunk = b" " * 65536

        def handler(request: httpx.Request) -> httpx.Response:
            if mode == "sync":
                return httpx.Response(200, content=_endless(chunk, served, 20 * cap))
            return httpx.Response(200, content=_aendless(chunk, served, 20 * cap))

        ef = build(handler, Clock())
        with pytest.raises(InvalidResponseError, match="larger than"):
            call(ef, ["one text"], mode)
        assert sum(served) <= cap + 2 * len(chunk)
        assert ef.usage.requests == 1  # not retried: the service broke the contract

    def test_the_cap_grows_with_the_number_of_texts(self) -> None:
        """100 texts may bring back 100 times what one text may."""
        ef = ChromaSparseEmbeddingFunction(api_key=SECRET, base_url=URL)
        one, hundred = ef._core.body_limit(200, 1), ef._core.body_limit(200, 100)
        assert hundred - one == 99 * RESPONSE_BYTES_PER_TEXT

    def test_a_long_error_body_is_cut_not_fatal(self, mode: str) -> None:
        """A 400 with a 1 MB body still raises the 400's error, quoting only its start."""
        from chroma_sparse_ef import InvalidRequestError

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(400, content=b"x" * 1_000_000)

        with pytest.raises(InvalidRequestError) as info:
            call(build(handler, Clock()), ["a"], mode)
        assert len(str(info.value)) < 2000


class TestTimeoutSetting:
    def test_a_number_bounds_the_attempt_with_a_short_connect(self) -> None:
        """timeout=30: 30 s per attempt, connect within min(5, 30) s."""
        ef = ChromaSparseEmbeddingFunction(api_key=SECRET, base_url=URL, timeout=30)
        assert ef.settings.timeout == 30.0
        assert ef._timeout.connect == DEFAULT_CONNECT_TIMEOUT
        assert ef._timeout.read == 30.0

    def test_an_httpx_timeout_keeps_its_phases(self) -> None:
        """An httpx.Timeout sets each phase; the attempt is bounded by the largest."""
        phases = httpx.Timeout(20.0, connect=2.0)
        ef = ChromaSparseEmbeddingFunction(api_key=SECRET, base_url=URL, timeout=phases)
        assert ef._timeout is phases
        assert ef.settings.timeout == 20.0
        assert ef.get_config()["timeout"] == 20.0

    @pytest.mark.parametrize(
        "timeout",
        [httpx.Timeout(None), httpx.Timeout(10.0, read=None), float("inf"), float("nan"), 0],
    )
    def test_unbounded_timeouts_are_refused(self, timeout: Any) -> None:
        """A phase without a limit, or a non-finite number, is a ConfigurationError."""
        with pytest.raises(ConfigurationError, match="timeout"):
            ChromaSparseEmbeddingFunction(api_key=SECRET, base_url=URL, timeout=timeout)


class TestKeyRule:
    def config(self, base_url: str) -> dict[str, Any]:
        return {
            "model": "prithivida/Splade_PP_en_v1",
            "api_key_env_var": "CHROMA_API_KEY",
            "base_url": base_url,
        }

    def test_a_stored_foreign_url_gets_no_env_key_and_fails_at_first_call(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Rebuilt from a config naming another host: builds, then refuses before sending."""
        monkeypatch.setenv("CHROMA_API_KEY", SECRET)
        ef = ChromaSparseEmbeddingFunction.build_from_config(
            self.config("https://collector.example.net")
        )
        assert ef._core._api_key is None
        with pytest.raises(MissingAPIKeyError) as info:
            ef(["a"])
        message = str(info.value)
        assert "https://collector.example.net" in message
        assert "api_key" in message
        assert "CHROMA_EMBED_URL" in message
        assert SECRET not in message

    def test_a_stored_url_equal_to_chroma_embed_url_gets_the_key(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The URL the environment names is trusted, stored or not."""
        monkeypatch.setenv("CHROMA_API_KEY", SECRET)
        monkeypatch.setenv("CHROMA_EMBED_URL", "https://proxy.example.net/")
        ef = ChromaSparseEmbeddingFunction.build_from_config(
            self.config("https://proxy.example.net")
        )
        assert ef._core.requests["documents"].headers["x-chroma-token"] == SECRET

    def test_the_hosted_url_stored_in_a_config_gets_the_key(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The hosted service's own URL is always trusted."""
        monkeypatch.setenv("CHROMA_API_KEY", SECRET)
        ef = ChromaSparseEmbeddingFunction.build_from_config(
            self.config("https://embed.trychroma.com")
        )
        assert ef._core.requests["documents"].headers["x-chroma-token"] == SECRET

    def test_a_url_passed_to_the_constructor_is_trusted_when_rebuilt(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A collection this process created with its own base_url reopens with the key."""
        monkeypatch.setenv("CHROMA_API_KEY", SECRET)
        mine = ChromaSparseEmbeddingFunction(base_url="https://mine.example.org")
        again = ChromaSparseEmbeddingFunction.build_from_config(mine.get_config())
        assert again._core.requests["documents"].headers["x-chroma-token"] == SECRET

    def test_a_stored_loopback_url_gets_the_placeholder_never_the_key(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A stored URL on 127.0.0.0/8 works without a key and never receives the real one."""
        monkeypatch.setenv("CHROMA_API_KEY", SECRET)
        ef = ChromaSparseEmbeddingFunction.build_from_config(self.config("http://127.0.0.77:9"))
        assert ef._core.requests["documents"].headers["x-chroma-token"] != SECRET


class TestErrorKinds:
    def test_status_errors_keep_the_request_id(self, mode: str) -> None:
        """A 400 carrying x-request-id: the error keeps it, for a support ticket."""
        from chroma_sparse_ef import InvalidRequestError

        service = FakeService(
            script=[httpx.Response(400, json={"error": "bad"}, headers={"x-request-id": "r-42"})]
        )
        with pytest.raises(InvalidRequestError) as info:
            call(build(service, Clock()), ["a"], mode)
        assert info.value.request_id == "r-42"
        assert info.value.status_code == 400

    def test_a_connection_failure_is_an_api_connection_error(self, mode: str) -> None:
        """No response after the retries: APIConnectionError (still a ServiceError),
        with no status and no chained httpx exception."""
        from chroma_sparse_ef import ServiceError
        from chroma_sparse_ef._exceptions import APIConnectionError, APIStatusError

        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

        with pytest.raises(APIConnectionError) as info:
            call(build(refuse, Clock()), ["a"], mode)
        err = info.value
        assert isinstance(err, ServiceError)
        assert not isinstance(err, APIStatusError)
        assert err.status_code is None
        assert err.__cause__ is None
        assert err.__context__ is None
        assert "Connection refused" in str(err)

    def test_a_timeout_is_an_api_timeout_error(self, mode: str) -> None:
        """An attempt that timed out, after the retries: APITimeoutError."""
        from chroma_sparse_ef._exceptions import APITimeoutError

        def slow(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("timed out", request=request)

        with pytest.raises(APITimeoutError, match="timed out"):
            call(build(slow, Clock()), ["a"], mode)
