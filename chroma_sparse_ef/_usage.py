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
    """

    requests: int = 0
    texts: int = 0
    tokens: int = 0
    retries: int = 0


class UsageMeter:
    """Thread-safe counters behind `Usage` snapshots."""

    __slots__ = ("_lock", "_requests", "_retries", "_texts", "_tokens")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = self._texts = self._tokens = self._retries = 0

    def sent(self) -> None:
        """Count one HTTP request."""
        with self._lock:
            self._requests += 1

    def retried(self) -> None:
        """Count one retry."""
        with self._lock:
            self._retries += 1

    def succeeded(self, texts: int, tokens: int) -> None:
        """Count a successful response for `texts` texts and `tokens` tokens."""
        with self._lock:
            self._texts += texts
            self._tokens += tokens

    def snapshot(self) -> Usage:
        """The counts so far, consistent with each other."""
        with self._lock:
            return Usage(self._requests, self._texts, self._tokens, self._retries)

    def reset(self) -> Usage:
        """Return the counts so far and start again from zero."""
        with self._lock:
            usage = Usage(self._requests, self._texts, self._tokens, self._retries)
            self._requests = self._texts = self._tokens = self._retries = 0
            return usage
