"""Per-token rate limiting: a token bucket for each `x-chroma-token`.

Pure logic with an injectable clock, so tests check refills without sleeping.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .._exceptions import ConfigurationError
from ._settings import MAX_RATE_LIMIT_KEYS, RETRY_AFTER_MS_HEADER

__all__ = ["RateLimit", "TokenBucketLimiter", "retry_after_headers"]

_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([a-z]+))?\s*$")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Requests allowed per token: `requests` every `per_seconds`, in bursts of up to `requests`.

    Attributes:
        requests: How many requests the period allows (also the burst size).
        per_seconds: The period, in seconds.
    """

    requests: float
    per_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not (self.requests > 0 and math.isfinite(self.requests)):
            raise ConfigurationError(f"rate limit must be a positive number, got {self.requests}")
        if not (self.per_seconds > 0 and math.isfinite(self.per_seconds)):
            raise ConfigurationError(f"rate limit period must be positive, got {self.per_seconds}")

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse ``"N"``, ``"N/s"`` or ``"N/min"`` (requests per second or per minute).

        Args:
            text: The rate, e.g. ``"10/s"``.

        Returns:
            The rate limit.

        Raises:
            ConfigurationError: If the text is not a positive rate with a known unit.
        """
        match = _RATE_RE.match(text.lower())
        unit = (match.group(2) or "s") if match else ""
        if match is None or unit not in _UNITS:
            raise ConfigurationError(
                f"invalid rate limit {text!r}: expected N, N/s or N/min, e.g. 10/s"
            )
        return cls(float(match.group(1)), _UNITS[unit])

    @property
    def per_second(self) -> float:
        """Refill rate in requests per second."""
        return self.requests / self.per_seconds

    def __str__(self) -> str:
        if self.per_seconds == 60.0:
            return f"{self.requests:g}/min"
        return f"{self.per_second:g}/s"


class TokenBucketLimiter:
    """One token bucket per client token, holding at most `max_keys` buckets.

    Args:
        limit: The rate each token gets.
        clock: Monotonic seconds; injectable for tests.
        max_keys: Buckets kept; the least recently used is dropped beyond this, which only
            ever lets a forgotten token start again with a full bucket.
    """

    def __init__(
        self,
        limit: RateLimit,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_RATE_LIMIT_KEYS,
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._max_keys = max_keys
        self._capacity = max(1.0, limit.requests)
        # Keys are digests, not tokens: the limiter never holds a client's key in clear.
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, token: str) -> float:
        """Take one request from `token`'s bucket.

        Args:
            token: The client's `x-chroma-token`.

        Returns:
            0.0 if the request may go ahead, else the seconds until it would be allowed.
        """
        key = hashlib.sha256(token.encode("utf-8", errors="surrogatepass")).digest()
        now = self._clock()
        rate = self.limit.per_second
        with self._lock:
            level, last = self._buckets.pop(key, (self._capacity, now))
            level = min(self._capacity, level + (now - last) * rate)
            if level >= 1.0:
                wait = 0.0
                level -= 1.0
            else:
                wait = (1.0 - level) / rate
            self._buckets[key] = (level, now)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        return wait


def retry_after_headers(wait: float) -> dict[str, str]:
    """The headers of a 429: Retry-After in whole seconds (rounded up) and in milliseconds.

    Args:
        wait: Seconds until the next request would be allowed.

    Returns:
        ``Retry-After`` (at least 1, since 0 invites an instant retry) and ``retry-after-ms``.
    """
    return {
        "Retry-After": str(max(1, math.ceil(wait))),
        RETRY_AFTER_MS_HEADER: str(max(1, math.ceil(wait * 1000))),
    }
