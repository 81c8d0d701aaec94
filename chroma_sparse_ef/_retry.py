"""When to retry and how long to wait. Pure: the clock and the randomness are passed in.

Retried: 408, 429 and 5xx except 501, connection errors and timeouts, at most
`max_retries` times after the first attempt. The wait is the service's hint when it gives
one (`retry-after-ms`, then `retry-after` in seconds or as an HTTP date); otherwise
exponential backoff from 0.5 s doubling to 8 s, each wait shortened by up to a quarter at
random so that many clients do not retry in lockstep. A hint longer than
`MAX_RETRY_AFTER` is not slept on: the caller raises `RateLimitError` carrying it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

from ._constants import INITIAL_RETRY_DELAY, MAX_RETRY_DELAY, RETRYABLE_STATUS_CODES

__all__ = ["backoff_delay", "is_retryable_status", "retry_after_from_headers"]


def is_retryable_status(status: int) -> bool:
    """True for 408, 429 and 5xx other than 501 (which no retry can fix)."""
    return status in RETRYABLE_STATUS_CODES or (status >= 500 and status != 501)


def backoff_delay(retries_done: int, random: Callable[[], float]) -> float:
    """Seconds to wait before retry number `retries_done + 1` when the service gave no hint.

    Args:
        retries_done: How many retries already happened (0 before the first retry).
        random: A source of floats in [0, 1), injected so tests are deterministic.

    Returns:
        min(0.5 * 2**retries_done, 8) seconds, reduced by up to 25 % of jitter.
    """
    delay = min(INITIAL_RETRY_DELAY * 2.0**retries_done, MAX_RETRY_DELAY)
    return delay * (1.0 - 0.25 * random())


def retry_after_from_headers(headers: Mapping[str, str], *, now: float) -> float | None:
    """Read the service's wait hint in seconds, or None when it gave none.

    `retry-after-ms` wins (milliseconds); then `retry-after` as seconds, or as an HTTP
    date relative to `now` (Unix time). Negative, non-finite or unparseable hints are
    ignored.

    Args:
        headers: Response headers (case-insensitive mapping, such as httpx's).
        now: The current Unix time, injected for HTTP-date hints.

    Returns:
        The hint in seconds, or None.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        ms = _float_or_nan(raw_ms)
        if math.isfinite(ms) and ms >= 0:
            return ms / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _float_or_nan(raw)
    if math.isfinite(seconds):
        return seconds if seconds >= 0 else None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _float_or_nan(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        return math.nan
