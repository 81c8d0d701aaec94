"""Ready means ready: a server is announced only once a client can connect and be served."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from chroma_sparse_ef.server import bind_socket, create_app, run_in_thread
from chroma_sparse_ef.server._serve import make_uvicorn_server

#: Long enough that a server announcing itself before its startup ends is caught.
_SLOW_STARTUP_S = 0.5


def _slow_starting_app(done: threading.Event) -> FastAPI:
    """An app whose startup (lifespan) takes a while, then records that it finished."""
    import anyio

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await anyio.sleep(_SLOW_STARTUP_S)
        done.set()
        yield

    application = FastAPI(lifespan=lifespan)

    @application.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return application


def test_run_in_thread_returns_once_a_request_is_served_at_the_first_try() -> None:
    """After a slow startup, the first connection and request succeed with no retry."""
    started = threading.Event()
    with run_in_thread(_slow_starting_app(started)) as server:
        assert started.is_set()
        with socket.create_connection((server.host, server.port), timeout=5):
            pass
        transport = httpx.HTTPTransport(retries=0)
        with httpx.Client(transport=transport) as client:
            assert client.get(f"{server.url}/healthz").json() == {"status": "ok"}


def test_on_ready_is_called_after_startup_with_the_socket_accepting() -> None:
    """The hook `serve` prints its line from runs after the lifespan, with the socket
    listening: a connection made inside the hook succeeds."""
    started = threading.Event()
    seen: dict[str, bool] = {}
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    called = threading.Event()

    def on_ready() -> None:
        seen["startup_done"] = started.is_set()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                seen["connected"] = True
        except OSError:
            seen["connected"] = False
        called.set()

    server = make_uvicorn_server(
        _slow_starting_app(started), log_level=None, log_config=None, on_ready=on_ready
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    with sock:
        thread.start()
        try:
            assert called.wait(30)
        finally:
            server.should_exit = True
            thread.join(30)
    assert seen == {"startup_done": True, "connected": True}


def test_a_bound_socket_refuses_connections_until_the_server_listens() -> None:
    """The premise of the readiness checks: binding alone does not accept connections."""
    with bind_socket("127.0.0.1", 0) as sock, pytest.raises(ConnectionRefusedError):
        socket.create_connection(sock.getsockname()[:2], timeout=5).close()


def test_run_local_server_is_ready_on_return_many_times_over() -> None:
    """Ten servers in a row each answer their first request at once (no retries)."""
    transport = httpx.HTTPTransport(retries=0)
    with httpx.Client(transport=transport) as client:
        for _ in range(10):
            with run_in_thread(create_app()) as server:
                assert client.get(f"{server.url}/healthz").status_code == 200
