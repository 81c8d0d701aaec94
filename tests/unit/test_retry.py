"""Retry policy: which statuses, how long, and the service's hints."""

from __future__ import annotations

import pytest

from chroma_sparse_ef._retry import backoff_delay, is_retryable_status, retry_after_from_headers


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_transient_statuses_are_retried(status: int) -> None:
    """408, 429 and 5xx are worth another try."""
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422, 501])
def test_client_errors_and_501_are_not_retried(status: int) -> None:
    """No retry can fix a bad request, a bad key or a dense-only model."""
    assert not is_retryable_status(status)


def test_backoff_doubles_from_half_a_second_and_caps_at_eight() -> None:
    """Without jitter the waits are 0.5, 1, 2, 4, 8, 8 seconds."""
    assert [backoff_delay(n, lambda: 0.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_jitter_shortens_the_wait_by_at_most_a_quarter() -> None:
    """Full jitter draw takes 25 % off, never more."""
    assert backoff_delay(1, lambda: 0.999999) == pytest.approx(0.75, rel=1e-5)


def test_retry_after_ms_wins_over_retry_after() -> None:
    """Milliseconds are the more precise hint."""
    assert retry_after_from_headers({"retry-after-ms": "250", "retry-after": "9"}, now=0) == 0.25


def test_retry_after_in_seconds() -> None:
    """A plain number is seconds."""
    assert retry_after_from_headers({"retry-after": "3"}, now=0) == 3.0


def test_retry_after_as_http_date_is_relative_to_now() -> None:
    """An HTTP date becomes the seconds from `now` until then."""
    now = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
    hint = retry_after_from_headers({"retry-after": "Tue, 14 Nov 2023 22:13:27 GMT"}, now=now)
    assert hint == pytest.approx(7.0)


def test_retry_after_date_in_the_past_means_now() -> None:
    """A date already passed means no wait."""
    assert (
        retry_after_from_headers({"retry-after": "Tue, 14 Nov 2023 22:13:27 GMT"}, now=2e9) == 0.0
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"retry-after": "soon"},
        {"retry-after": "-3"},
        {"retry-after-ms": "nan"},
        {"retry-after": "inf"},
    ],
)
def test_missing_or_garbage_hints_are_ignored(headers: dict[str, str]) -> None:
    """Unusable hints fall back to backoff."""
    assert retry_after_from_headers(headers, now=0) is None
