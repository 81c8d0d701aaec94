"""The attempt layer: httpx internals it relies on, deadlines and failures as plain data."""

from __future__ import annotations

import time

import httpcore
import httpx
import pytest

from chroma_sparse_ef._transport import (
    Failure,
    _DeadlineBackend,
    _left,
    deadline,
    describe,
    sync_client,
)


def test_httpx_still_builds_its_pool_where_the_deadline_backend_is_installed() -> None:
    """Contract: an httpx.Client keeps its default transport in `_transport`, an
    HTTPTransport with an httpcore.ConnectionPool in `_pool` that has a `_network_backend`.
    If an httpx upgrade moves them, this fails before users lose the per-attempt deadline."""
    client = httpx.Client()
    assert isinstance(client._transport, httpx.HTTPTransport)
    assert isinstance(client._transport._pool, httpcore.ConnectionPool)
    assert hasattr(client._transport._pool, "_network_backend")


def test_clients_the_package_creates_send_through_the_deadline_backend() -> None:
    """The sync client's default pool uses the deadline backend."""
    client = sync_client(httpx.Timeout(5.0), 4)
    transport = client._transport
    assert isinstance(transport, httpx.HTTPTransport)
    assert isinstance(transport._pool._network_backend, _DeadlineBackend)  # type: ignore[attr-defined]


def test_a_proxy_in_the_environment_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """With HTTPS_PROXY set, httpx still mounts its proxy transport for https URLs."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    client = sync_client(httpx.Timeout(5.0), 4)
    assert any(pattern.scheme == "https" for pattern in client._mounts)


def test_socket_timeouts_shrink_to_what_is_left_of_the_deadline() -> None:
    """Inside a deadline 2 s away, a 60 s read timeout becomes at most 2 s."""
    with deadline(time.monotonic() + 2.0):
        left = _left(60.0, httpcore.ReadTimeout)
    assert left is not None
    assert 1.5 < left <= 2.0
    assert _left(60.0, httpcore.ReadTimeout) == 60.0  # outside: unchanged


def test_a_passed_deadline_raises_the_phases_timeout() -> None:
    """Once the deadline has passed, the next socket operation raises httpcore's timeout."""
    with deadline(time.monotonic() - 0.1), pytest.raises(httpcore.ReadTimeout):
        _left(60.0, httpcore.ReadTimeout)


def test_failures_keep_only_strings() -> None:
    """A Failure holds the exception's type and text, never the exception or its request."""
    request = httpx.Request("POST", "http://x", headers={"x-chroma-token": "ck-secret"})
    failure = describe(httpx.ConnectError("[Errno 111] Connection refused", request=request))
    assert failure == Failure(False, "ConnectError: [Errno 111] Connection refused")
    assert describe(httpx.ReadTimeout("slow", request=request)).timeout
