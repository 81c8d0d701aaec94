"""The attempt layer: httpx internals it relies on, deadlines and failures as plain data."""

from __future__ import annotations

import time
import zlib

import httpcore
import httpx
import pytest

from chroma_sparse_ef._transport import (
    Failure,
    SecretHeaders,
    _DeadlineBackend,
    _Decoder,
    _left,
    bound_by_deadline,
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


def test_a_proxy_in_the_environment_sends_through_the_deadline_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With HTTP(S)_PROXY set, the proxy transports' pools use the deadline backend too."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    client = sync_client(httpx.Timeout(5.0), 4)
    pools = [t._pool for t in client._mounts.values() if isinstance(t, httpx.HTTPTransport)]
    assert pools
    for pool in pools:
        assert isinstance(pool, httpcore.ConnectionPool)
        assert isinstance(pool._network_backend, _DeadlineBackend)


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


def _packed(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(("encoding", "wbits"), [("gzip", 31), ("deflate", 15), ("deflate", -15)])
def test_the_decoder_reads_gzip_and_both_deflates(encoding: str, wbits: int) -> None:
    """gzip, zlib-wrapped deflate and raw deflate decode to the original bytes."""
    body = b'{"embeddings": []}' * 100
    packed = _packed(body, wbits)
    decoder = _Decoder(encoding, limit=10_000)
    for start in range(0, len(packed), 7):
        assert decoder.feed(packed[start : start + 7])
    assert bytes(decoder.content) == body
    assert not decoder.over_limit


def test_the_decoder_never_inflates_past_its_limit() -> None:
    """A 64 KiB raw chunk of a gzip bomb yields at most the limit, then reading stops."""
    bomb = _packed(b"0" * 64_000_000, 31)
    decoder = _Decoder("gzip", limit=1000)
    assert not decoder.feed(bomb[:65536])
    assert decoder.over_limit
    assert len(decoder.content) == 1000


def test_the_decoder_caps_identity_bodies_too() -> None:
    """An unencoded body past the limit keeps only its start."""
    decoder = _Decoder("identity", limit=5)
    assert decoder.feed(b"abc")
    assert not decoder.feed(b"defg")
    assert (bytes(decoder.content), decoder.over_limit) == (b"abcde", True)


def test_the_decoder_refuses_encodings_it_cannot_bound() -> None:
    """br, zstd and the like are refused rather than handed to an unbounded decoder."""
    with pytest.raises(ValueError, match="unsupported content-encoding"):
        _Decoder("br", limit=10)


def test_secret_headers_hide_the_token_in_their_repr() -> None:
    """A frame holding the request headers prints the model but not the token."""
    headers = SecretHeaders({"x-chroma-token": "ck-hidden-7", "x-chroma-embedding-model": "m"})
    assert "ck-hidden-7" not in repr(headers)
    assert "'m'" in repr(headers)
    assert httpx.Headers(headers)["x-chroma-token"] == "ck-hidden-7"


def test_errors_that_are_not_httpx_ones_are_fatal_failures() -> None:
    """An exception outside httpx (a request that cannot be built) is not retried."""
    assert describe(UnicodeEncodeError("ascii", "é", 0, 1, "no")).fatal
    assert not describe(httpx.ConnectError("refused")).fatal
    assert not describe(zlib.error("bad stream")).fatal


def test_a_callers_pool_keeps_its_own_backend_inside_the_deadline_wrapper() -> None:
    """`bound_by_deadline` wraps the pool's backend once, keeping it as the inner one."""
    client = httpx.Client()
    pool = client._transport._pool  # type: ignore[attr-defined]
    original = pool._network_backend
    bound_by_deadline(client)
    bound_by_deadline(client)
    assert isinstance(pool._network_backend, _DeadlineBackend)
    assert pool._network_backend._inner is original


def test_outside_an_attempt_the_wrapper_keeps_every_timeout() -> None:
    """With no deadline in the context, socket timeouts pass through unchanged."""
    assert _left(30.0, httpcore.ReadTimeout) == 30.0
    assert _left(None, httpcore.ReadTimeout) is None
