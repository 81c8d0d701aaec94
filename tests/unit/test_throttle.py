"""The shared throttle: pauses, pacing and AIMD rate changes, on an injected clock."""

from __future__ import annotations

import math
import threading

import pytest

from chroma_sparse_ef._constants import (
    MIN_THROTTLE_RATE,
    RATE_INCREASE_STEP,
    THROTTLE_BETA,
)
from chroma_sparse_ef._throttle import Throttle


def test_nothing_is_paced_before_the_first_429() -> None:
    """A throttle that never saw a 429 lets every request start at once."""
    throttle = Throttle()
    assert [throttle.acquire(10.0) for _ in range(100)] == [0.0] * 100
    assert throttle.rate == math.inf


def test_a_429_pauses_every_request_until_its_hint_passes() -> None:
    """After a 429 with a 2 s hint, no request may start for 2 s, whoever asks."""
    throttle = Throttle()
    throttle.throttled(sent_at=10.0, now=10.0, delay=2.0)
    assert throttle.acquire(10.5) == pytest.approx(1.5)
    assert throttle.acquire(11.9) == pytest.approx(0.1)
    assert throttle.acquire(12.0) == 0.0


def test_first_429_sets_the_rate_from_the_hint_when_no_success_was_seen() -> None:
    """With no success in the last second, a 0.2 s hint means 5/s, paced at 0.7 x 5."""
    throttle = Throttle()
    throttle.throttled(sent_at=0.0, now=0.0, delay=0.2)
    assert throttle.rate == pytest.approx(THROTTLE_BETA * 5.0)


def test_first_429_sets_the_rate_from_the_successes_of_the_last_second() -> None:
    """Eight successes in the last second and a long hint: 0.7 x 8 requests/s."""
    throttle = Throttle()
    for i in range(8):
        throttle.succeeded(9.0 + i * 0.1)
    throttle.succeeded(5.0)  # older than a second at t=10: not counted
    throttle.throttled(sent_at=9.9, now=10.0, delay=3.0)
    assert throttle.rate == pytest.approx(THROTTLE_BETA * 8.0)


def test_a_zero_hint_before_any_success_paces_at_what_was_sent() -> None:
    """16 requests started in the last second, the first answer a 429 with
    `retry-after: 0`: pacing starts at 0.7 x 16/s, not at the 1 request per 10 s floor
    (which let a minute of a healthy service carry 7 requests)."""
    throttle = Throttle()
    for _ in range(16):
        assert throttle.acquire(0.0) == 0.0
    throttle.throttled(sent_at=0.0, now=0.05, delay=0.0)
    assert throttle.rate == pytest.approx(THROTTLE_BETA * 16.0)


def test_a_zero_hint_with_nothing_else_known_still_allows_one_per_second() -> None:
    """A 429 with a zero hint and no start or success on record: 0.7 requests/s."""
    throttle = Throttle()
    throttle.throttled(sent_at=0.0, now=0.0, delay=0.0)
    assert throttle.rate == pytest.approx(THROTTLE_BETA * 1.0)


def test_paced_requests_start_one_per_interval() -> None:
    """At a rate of r, consecutive starts are 1/r apart."""
    throttle = Throttle()
    throttle.throttled(sent_at=0.0, now=0.0, delay=0.2)
    rate = throttle.rate
    assert throttle.acquire(0.2) == 0.0
    assert throttle.acquire(0.2) == pytest.approx(1.0 / rate)
    assert throttle.acquire(0.2 + 1.0 / rate) == 0.0


def test_a_burst_of_429s_lowers_the_rate_once() -> None:
    """429s for requests sent before the last decrease do not decrease again."""
    throttle = Throttle()
    throttle.throttled(sent_at=0.0, now=0.01, delay=0.2)
    first = throttle.rate
    for i in range(10):
        throttle.throttled(sent_at=0.0, now=0.02 + i * 0.001, delay=0.2)
    assert throttle.rate == first


def test_a_429_after_the_decrease_lowers_the_rate_again() -> None:
    """A request sent after the last decrease that still gets a 429 cuts the rate by 0.7."""
    throttle = Throttle()
    throttle.throttled(sent_at=0.0, now=0.0, delay=0.5)
    rate = throttle.rate
    throttle.throttled(sent_at=1.0, now=1.1, delay=0.5)
    assert throttle.rate == pytest.approx(THROTTLE_BETA * rate)


def test_successes_raise_the_rate_additively() -> None:
    """Each success adds 2 % of the rate set at the last decrease."""
    throttle = Throttle()
    throttle.throttled(sent_at=0.0, now=0.0, delay=0.2)
    floor = throttle.rate
    for i in range(10):
        throttle.succeeded(1.0 + i)
    assert throttle.rate == pytest.approx(floor * (1 + 10 * RATE_INCREASE_STEP))


def test_the_rate_never_falls_below_the_minimum() -> None:
    """However many 429s, requests are still paced at MIN_THROTTLE_RATE or faster."""
    throttle = Throttle()
    for i in range(50):
        throttle.throttled(sent_at=float(i), now=float(i) + 0.5, delay=100.0)
    assert throttle.rate == pytest.approx(MIN_THROTTLE_RATE)


def test_disabled_throttle_never_waits() -> None:
    """With throttling switched off (the old behaviour) nothing pauses or paces."""
    throttle = Throttle(enabled=False)
    throttle.throttled(sent_at=0.0, now=0.0, delay=5.0)
    assert throttle.acquire(0.1) == 0.0
    assert throttle.rate == math.inf


def test_concurrent_acquires_book_distinct_slots() -> None:
    """Threads asking at the same instant get one start each per interval, never two."""
    throttle = Throttle()
    throttle.throttled(sent_at=0.0, now=0.0, delay=0.1)
    granted: list[float] = []
    lock = threading.Lock()

    def ask() -> None:
        wait = throttle.acquire(0.1)
        with lock:
            granted.append(wait)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted.count(0.0) == 1
