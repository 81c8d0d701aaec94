"""Token usage, accumulated across requests and threads."""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["Usage", "UsageMeter"]


@dataclass(frozen=True, slots=True)
class Usage:
    """A snapshot of what an embedding function has used so far.

    Attributes:
        requests: HTTP requests sent, including ones that were retried or split.
        texts: Texts embedded successfully.
        tokens: Sum of the service's `num_tokens` over successful responses.
        retries: Requests that were sent again after a retryable failure.
        rate_limited: 429 responses received.
        throttled_seconds: Seconds requests spent waiting because of rate limiting (the
            pause a 429 imposes on every request, and the pacing after it), summed over
            requests: with requests waiting side by side it can exceed the wall time.
    """

    requests: int = 0
    texts: int = 0
    tokens: int = 0
    retries: int = 0
    rate_limited: int = 0
    throttled_seconds: float = 0.0


class UsageMeter:
    """Thread-safe counters behind `Usage` snapshots."""

    __slots__ = (
        "_lock",
        "_rate_limited",
        "_requests",
        "_retries",
        "_texts",
        "_throttled",
        "_tokens",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._zero()

    def _zero(self) -> None:
        self._requests = self._texts = self._tokens = self._retries = self._rate_limited = 0
        self._throttled = 0.0

    def sent(self) -> None:
        """Count one HTTP request."""
        with self._lock:
            self._requests += 1

    def retried(self) -> None:
        """Count one retry."""
        with self._lock:
            self._retries += 1

    def rate_limited(self) -> None:
        """Count one 429."""
        with self._lock:
            self._rate_limited += 1

    def waited(self, seconds: float) -> None:
        """Add time a request spent waiting on the throttle."""
        with self._lock:
            self._throttled += seconds

    def succeeded(self, texts: int, tokens: int) -> None:
        """Count a successful response for `texts` texts and `tokens` tokens."""
        with self._lock:
            self._texts += texts
            self._tokens += tokens

    def _usage(self) -> Usage:
        return Usage(
            self._requests,
            self._texts,
            self._tokens,
            self._retries,
            self._rate_limited,
            self._throttled,
        )

    def snapshot(self) -> Usage:
        """The counts so far, consistent with each other."""
        with self._lock:
            return self._usage()

    def reset(self) -> Usage:
        """Return the counts so far and start again from zero."""
        with self._lock:
            usage = self._usage()
            self._zero()
            return usage
