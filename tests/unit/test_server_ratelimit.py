"""Per-token rate limiting: parsing, token buckets on a fake clock, 429 headers."""

from __future__ import annotations

import pytest

from chroma_sparse_ef import ConfigurationError
from chroma_sparse_ef.server import RateLimit
from chroma_sparse_ef.server._ratelimit import TokenBucketLimiter, retry_after_headers


class FakeClock:
    """Monotonic time that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestRateLimitParse:
    @pytest.mark.parametrize(
        ("text", "requests", "per"),
        [
            ("10", 10, 1),
            ("10/s", 10, 1),
            ("2.5/sec", 2.5, 1),
            ("600/min", 600, 60),
            (" 3 / m ", 3, 60),
        ],
    )
    def test_parses_per_second_and_per_minute(self, text: str, requests: float, per: float) -> None:
        """N, N/s and N/min are understood."""
        assert RateLimit.parse(text) == RateLimit(requests, per)

    @pytest.mark.parametrize("text", ["", "fast", "10/h", "-1/s", "0", "1e3"])
    def test_refuses_anything_else(self, text: str) -> None:
        """Unknown units, zero and negative rates are configuration errors."""
        with pytest.raises(ConfigurationError):
            RateLimit.parse(text)

    def test_str_round_trips(self) -> None:
        """The rate prints in the form it is written."""
        assert str(RateLimit.parse("10/s")) == "10/s"
        assert RateLimit.parse(str(RateLimit.parse("600/min"))) == RateLimit(600, 60)


class TestTokenBucket:
    def test_allows_a_burst_then_refuses_with_the_wait(self) -> None:
        """N requests pass at once; the next waits 1/N s."""
        clock = FakeClock()
        limiter = TokenBucketLimiter(RateLimit(4, 1), clock=clock)
        assert [limiter.acquire("k") for _ in range(4)] == [0.0] * 4
        assert limiter.acquire("k") == pytest.approx(0.25)

    def test_refills_with_time(self) -> None:
        """After the wait it was told, a client may send again."""
        clock = FakeClock()
        limiter = TokenBucketLimiter(RateLimit(2, 1), clock=clock)
        limiter.acquire("k")
        limiter.acquire("k")
        wait = limiter.acquire("k")
        clock.now += wait
        assert limiter.acquire("k") == 0.0

    def test_refused_requests_do_not_consume(self) -> None:
        """Retrying early does not push the next allowed time further away."""
        clock = FakeClock()
        limiter = TokenBucketLimiter(RateLimit(1, 10), clock=clock)
        limiter.acquire("k")
        first = limiter.acquire("k")
        second = limiter.acquire("k")
        assert first == pytest.approx(second) == pytest.approx(10.0)

    def test_each_token_has_its_own_bucket(self) -> None:
        """One client's burst does not limit another."""
        limiter = TokenBucketLimiter(RateLimit(1, 60), clock=FakeClock())
        assert limiter.acquire("a") == 0.0
        assert limiter.acquire("a") > 0
        assert limiter.acquire("b") == 0.0

    def test_memory_is_bounded_by_max_keys(self) -> None:
        """Invented tokens cannot grow the limiter without bound."""
        limiter = TokenBucketLimiter(RateLimit(1, 60), clock=FakeClock(), max_keys=3)
        for n in range(50):
            limiter.acquire(f"token-{n}")
        assert len(limiter._buckets) == 3

    def test_tokens_are_not_kept_in_clear(self) -> None:
        """The limiter keys buckets by digest, so it never holds a client's key."""
        limiter = TokenBucketLimiter(RateLimit(1, 60), clock=FakeClock())
        limiter.acquire("sk-planted-secret")
        assert all(b"sk-planted-secret" not in key for key in limiter._buckets)


class TestRetryAfterHeaders:
    def test_seconds_round_up_and_ms_are_exact(self) -> None:
        """Retry-After is whole seconds rounded up; retry-after-ms is the millisecond value."""
        assert retry_after_headers(1.2345) == {"Retry-After": "2", "retry-after-ms": "1235"}

    def test_never_zero(self) -> None:
        """A tiny wait still says 1 s / 1 ms, so clients do not retry in a tight loop."""
        assert retry_after_headers(0.0001) == {"Retry-After": "1", "retry-after-ms": "1"}
