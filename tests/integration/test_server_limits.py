"""The server's limits against slow and hostile clients, over real loopback sockets."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from chroma_sparse_ef.server import LocalServer, ServerLimits, create_app, run_in_thread

#: Short limits so each test takes about a second; the defaults are in _settings.
_TIMEOUT_S = 0.5
#: How long a test waits for the server to act before calling it a failure.
_PATIENCE_S = 10.0
_MODEL = "prithivida/Splade_PP_en_v1"


@pytest.fixture
def guarded() -> Iterator[LocalServer]:
    """A server with half-second head and body deadlines and at most 4 connections."""
    limits = ServerLimits(
        header_timeout_s=_TIMEOUT_S,
        body_timeout_s=_TIMEOUT_S,
        max_connections=4,
        max_header_bytes=4096,
    )
    with run_in_thread(create_app(limits=limits)) as server:
        yield server


def _connect(server: LocalServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=_PATIENCE_S)
    sock.settimeout(_PATIENCE_S)
    return sock


def _closed_by_server(sock: socket.socket) -> float:
    """Seconds until the server closes `sock` (reads and drops any response first)."""
    start = time.monotonic()
    with contextlib.suppress(ConnectionResetError):
        while sock.recv(65536):
            pass
    return time.monotonic() - start


def _request(path: str = "/healthz") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: local\r\n\r\n".encode()


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_connection_that_never_finishes_its_headers_is_closed(guarded: LocalServer) -> None:
    """Half a request head, then nothing: closed after header_timeout_s, not held open."""
    with _connect(guarded) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: local\r\n")
        waited = _closed_by_server(sock)
    assert _TIMEOUT_S * 0.8 <= waited < _PATIENCE_S


def test_headers_trickled_byte_by_byte_are_cut_off_at_the_deadline(
    guarded: LocalServer,
) -> None:
    """Sending a byte now and then does not extend the deadline (slowloris)."""
    with _connect(guarded) as sock:
        start = time.monotonic()
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 200:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.05)
            if time.monotonic() - start > _PATIENCE_S:
                break
        if not closed:
            _closed_by_server(sock)
        elapsed = time.monotonic() - start
    assert elapsed < _PATIENCE_S / 2


def test_a_kept_alive_connection_gets_a_new_deadline_for_each_request(
    guarded: LocalServer,
) -> None:
    """A served request, then a second head left unfinished: closed like the first."""
    with _connect(guarded) as sock:
        sock.sendall(_request())
        assert _read_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert _closed_by_server(sock) < _PATIENCE_S


def test_a_head_larger_than_the_limit_closes_the_connection(guarded: LocalServer) -> None:
    """Headers past max_header_bytes: closed at once, long before the deadline."""
    with _connect(guarded) as sock:
        start = time.monotonic()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-Big: " + b"a" * 8192 + b"\r\n")
        _closed_by_server(sock)
        assert time.monotonic() - start < _TIMEOUT_S


def test_connections_past_the_cap_are_closed_and_the_server_still_serves(
    guarded: LocalServer,
) -> None:
    """With 4 idle connections open, a fifth is closed on arrival; once they are gone,
    requests are served again."""
    idle = [_connect(guarded) for _ in range(4)]
    try:
        time.sleep(0.1)  # lets the server register the four before the fifth arrives
        with _connect(guarded) as extra:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                extra.sendall(_request())
            assert _closed_by_server(extra) < _TIMEOUT_S
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + _PATIENCE_S
    while True:
        try:
            if httpx.get(f"{guarded.url}/healthz", timeout=_PATIENCE_S).status_code == 200:
                break
        except httpx.TransportError:
            # The server notices the four closed sockets asynchronously.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_body_sent_too_slowly_is_408(guarded: LocalServer) -> None:
    """Headers promise 100 bytes, 10 arrive, then nothing: 408 after body_timeout_s."""
    with _connect(guarded) as sock:
        sock.sendall(
            b"POST /embed_sparse HTTP/1.1\r\nHost: local\r\nx-chroma-token: t\r\n"
            + f"x-chroma-embedding-model: {_MODEL}\r\n".encode()
            + b"content-type: application/json\r\ncontent-length: 100\r\n\r\n"
            + b'{"texts": '
        )
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 408")
