"""Adaptive throttling shared by every request of one embedding function.

Pure logic with an injected clock, no sleeping: the send loops ask `Throttle.acquire`
how long to wait, wait (thread or event loop), and report each outcome. One lock guards
the state and is never held across I/O, so one instance serves the thread pool of the sync
path and the tasks of the async path alike.

The algorithm is a client-side token bucket whose fill rate is adjusted AIMD-style, the
shape of the AWS SDKs' "adaptive" retry mode:

- Until the service first answers 429 nothing is paced: a client that is never throttled
  pays nothing.
- A 429 pauses every request of the instance until its hint (`retry-after-ms` /
  `retry-after`, else the backoff delay) has passed, not only the request that got it.
- The same 429 turns pacing on, or lowers its rate (multiplicative decrease): the new rate
  is `THROTTLE_BETA` (0.7) times the rate that was too much, estimated as the successes of
  the last `RATE_WINDOW` second, the current pacing rate, or one request per hint,
  whichever evidence there is; with none of those (a zero hint before any success), the
  requests started in the last window, at least one, since that is what was too much. Only a request sent after the last decrease can decrease
  again, so one burst of 429s answered together counts as one signal.
- Each success adds `RATE_INCREASE_STEP` (2 %) of the rate set at the last decrease
  (additive increase): about 15 successes climb back from 0.7x to the rate that was
  throttled, then the next 429 finds the limit again.
- Requests start at most one per `1 / rate` seconds (a bucket of one token), so requests
  in flight fall with the rate: about rate x latency of them.

Against a token bucket of N requests/s this holds the client between 0.7 N and a little
above N, with about one 429 per climb (see bench/bench_rate_limit.py for figures).
"""

from __future__ import annotations

import math
import threading
from collections import deque

from ._constants import MIN_THROTTLE_RATE, RATE_INCREASE_STEP, RATE_WINDOW, THROTTLE_BETA

__all__ = ["Throttle"]


class Throttle:
    """What one function instance learned from 429s: a pause and a pacing rate.

    Args:
        enabled: False turns every method into a no-op (the behaviour before throttling
            existed; kept for side-by-side benchmarks).
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        #: Requests per second while pacing; infinite until the first 429.
        self._rate = math.inf
        #: The rate set by the last decrease, which the additive step is a share of.
        self._floor = math.inf
        self._paused_until = -math.inf
        self._next_start = -math.inf
        self._last_decrease = -math.inf
        self._successes: deque[float] = deque()
        self._starts: deque[float] = deque()

    @property
    def rate(self) -> float:
        """Requests per second the instance is paced at (`inf` when not pacing)."""
        with self._lock:
            return self._rate

    def acquire(self, now: float) -> float:
        """Ask to start a request at `now`.

        Returns:
            0.0 when it may start now (its start is then booked), else the seconds to wait
            before asking again.
        """
        if not self.enabled:
            return 0.0
        with self._lock:
            start = max(now, self._paused_until, self._next_start)
            if start > now:
                return start - now
            if math.isfinite(self._rate):
                self._next_start = now + 1.0 / self._rate
            self._starts.append(now)
            _trim(self._starts, now)
            return 0.0

    def succeeded(self, now: float) -> None:
        """A request answered without throttling: count it and raise the rate a step."""
        if not self.enabled:
            return
        with self._lock:
            self._successes.append(now)
            _trim(self._successes, now)
            if math.isfinite(self._rate):
                self._rate += RATE_INCREASE_STEP * self._floor

    def throttled(self, sent_at: float, now: float, delay: float) -> None:
        """A request sent at `sent_at` got a 429 at `now`; the service asked for `delay` s.

        Pauses every request until `now + delay`, and lowers the rate unless this 429
        belongs to a burst that already lowered it.
        """
        if not self.enabled:
            return
        with self._lock:
            self._paused_until = max(self._paused_until, now + delay)
            if sent_at < self._last_decrease:
                return
            _trim(self._successes, now)
            _trim(self._starts, now)
            # What the service just allowed: the successes of the last window, or one
            # request per hint (the first 429 of a burst often arrives before the
            # burst's successes, and then the hint is all there is).
            seen = len(self._successes) / RATE_WINDOW
            if delay > 0:
                seen = max(seen, 1.0 / delay)
            if seen <= 0:
                # A zero hint before any success: what was sent was too much. Without
                # this, the minimum rate (1 request per 10 s) became the pace, and
                # climbing back from it took hundreds of successes.
                seen = max(1, len(self._starts)) / RATE_WINDOW
            too_much = min(self._rate, seen)
            self._rate = max(MIN_THROTTLE_RATE, THROTTLE_BETA * too_much)
            self._floor = self._rate
            self._last_decrease = now
            self._next_start = max(self._next_start, self._paused_until)


def _trim(times: deque[float], now: float) -> None:
    while times and times[0] <= now - RATE_WINDOW:
        times.popleft()
