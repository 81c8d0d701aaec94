"""One attempt over HTTP: a deadline for the whole attempt, a capped streaming read.

httpx applies its timeouts per operation (connect, each read, each write), so a server
that trickles one byte every 0.2 s keeps a request alive forever. Here every attempt also
has a deadline, from connect to the last byte read:

- sync: the clients this package creates send through an httpcore network backend that
  shortens each socket operation's timeout to what is left of the attempt's deadline
  (held in a context variable, so it follows the worker thread that sends). A read that
  would pass the deadline raises httpx's own `ReadTimeout`; headers trickled byte by
  byte are bounded too, since httpcore reads them through the same backend.
- async: the attempt runs under `asyncio.wait_for`, which cancels it at the deadline.
- a client passed in by the caller (`http_client=`) keeps its own transport; the deadline
  is then checked between chunks of the body, so an attempt overruns it by at most one
  read timeout.

The body is read in chunks and reading stops past a cap (`Core.body_limit`), so a hostile
or broken server cannot make the client hold or parse more than the cap.

Nothing here raises with the API key in reach: httpx's exceptions (whose frames hold the
request headers) are turned into a `Failure` of plain strings inside the `except` block,
and the caller raises its own error later, outside any handler, so no traceback, cause or
context chain leads back to those frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

__all__ = [
    "Failure",
    "Reply",
    "async_client",
    "attempt",
    "attempt_async",
    "deadline",
    "describe",
    "sync_client",
]

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "chroma_sparse_ef_deadline", default=None
)


@dataclass(frozen=True, slots=True)
class Reply:
    """What came back: the status, headers and body, read up to `limit` bytes.

    Attributes:
        over_limit: The body went past the limit; `content` holds only its start.
    """

    status: int
    headers: Mapping[str, str]
    content: bytes
    over_limit: bool


@dataclass(frozen=True, slots=True)
class Failure:
    """A request that got no complete response, described without the exception.

    Attributes:
        timeout: The attempt ran out of time (connect, a read, or its deadline).
        what: The exception's type and message, e.g. ``"ConnectError: [Errno 111] ..."``.
    """

    timeout: bool
    what: str


def describe(exc: BaseException) -> Failure:
    """A `Failure` from an httpx (or deadline) exception: strings only, no frames."""
    timeout = isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError))
    text = str(exc)
    return Failure(timeout, f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


@contextlib.contextmanager
def deadline(at: float) -> Iterator[None]:
    """Bound the socket operations of this thread (or task) by `at` (`time.monotonic`)."""
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    at = _DEADLINE.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the attempt's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.start_tls(
                ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)
            )
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def sync_client(timeout: httpx.Timeout, max_connections: int) -> httpx.Client:
    """An `httpx.Client` whose socket operations honour the attempt's `deadline`.

    The client is built as usual (proxies from the environment keep working through
    httpx's own mounts, where the deadline is checked between chunks only); then its
    default transport's pool sends through the deadline backend.
    """
    client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=max_connections))
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    # httpx builds its httpcore pool with the default backend and offers no argument to
    # change it; tests/unit/test_transport.py fails if these attributes ever move.
    if isinstance(pool, httpcore.ConnectionPool):
        pool._network_backend = _DeadlineBackend()
    return client


def async_client(timeout: httpx.Timeout, max_connections: int) -> httpx.AsyncClient:
    """An `httpx.AsyncClient`; its attempts are bounded by `attempt_async`'s `wait_for`."""
    return httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=max_connections))


def attempt(
    client: httpx.Client,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: httpx.Timeout,
    seconds: float,
    limit_for: Any,
) -> Reply | Failure:
    """Send one POST and read its body, within `seconds` and up to `limit_for(status)` bytes."""
    at = time.monotonic() + seconds
    failure: Failure
    try:
        with (
            deadline(at),
            client.stream("POST", url, content=body, headers=headers, timeout=timeout) as response,
        ):
            limit: int = limit_for(response.status_code)
            content = bytearray()
            for chunk in response.iter_bytes():
                content += chunk
                if len(content) > limit:
                    return Reply(
                        response.status_code, response.headers, bytes(content[:limit]), True
                    )
                if time.monotonic() > at:
                    return Failure(True, "ReadTimeout: the attempt's deadline passed")
            return Reply(response.status_code, response.headers, bytes(content), False)
    except httpx.HTTPError as exc:
        failure = describe(exc)
    return failure


async def attempt_async(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: httpx.Timeout,
    seconds: float,
    limit_for: Any,
) -> Reply | Failure:
    """`attempt` on the event loop: the whole attempt is cancelled at its deadline."""

    async def once() -> Reply:
        async with client.stream(
            "POST", url, content=body, headers=headers, timeout=timeout
        ) as response:
            limit: int = limit_for(response.status_code)
            content = bytearray()
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > limit:
                    return Reply(
                        response.status_code, response.headers, bytes(content[:limit]), True
                    )
            return Reply(response.status_code, response.headers, bytes(content), False)

    failure: Failure
    try:
        return await asyncio.wait_for(once(), seconds)
    except (httpx.HTTPError, asyncio.TimeoutError) as exc:
        failure = describe(exc)
    return failure
