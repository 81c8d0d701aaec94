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
- proxies from the environment: their pools send through the same backend.
- a client passed in by the caller (`http_client=`): its pools' backends are wrapped the
  same way (inert outside this package's attempts); with a transport of its own (not
  httpx's `HTTPTransport`) the deadline is checked between chunks of the body, so an
  attempt overruns it by at most one read timeout.

Redirects are never followed, even by a caller's client that follows them: httpx drops
`Authorization` on a redirect to another host but not `x-chroma-token`, so the key would
go wherever the server points.

The body is read in chunks and reading stops past a cap (`Core.body_limit`), so a hostile
or broken server cannot make the client hold or parse more than the cap. The cap counts
decoded bytes and holds for compressed bodies too: raw chunks are decompressed here with
`max_length`, never by httpx, whose decoder turns one 64 KiB chunk of a gzip bomb into
about 64 MiB before any check could run. Only gzip and deflate are asked for and accepted.

Nothing here raises with the API key in reach: httpx's exceptions (whose frames hold the
request headers) are turned into a `Failure` of plain strings inside the `except` block,
and the caller raises its own error later, outside any handler, so no traceback, cause or
context chain leads back to those frames. An interruption (Ctrl-C, a task's cancellation)
that arrives inside httpx is raised again as a fresh exception of the same type, outside
the handler, for the same reason; and the headers travel as `SecretHeaders`, whose repr
hides the token, so this module's own frames show none either.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from ._constants import TOKEN_HEADER

__all__ = [
    "ACCEPT_ENCODING",
    "Failure",
    "Reply",
    "SecretHeaders",
    "async_client",
    "attempt",
    "attempt_async",
    "bound_by_deadline",
    "deadline",
    "describe",
    "sync_client",
]

#: The encodings the bounded decoder reads (sent as `accept-encoding`, so httpx does not
#: advertise br or zstd when those packages happen to be installed).
ACCEPT_ENCODING = "gzip, deflate"

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
        fatal: The request could not be built or sent for a reason no retry changes
            (not an httpx error: e.g. a header httpx cannot encode).
    """

    timeout: bool
    what: str
    fatal: bool = False


class SecretHeaders(dict[str, str]):
    """Request headers whose repr hides the token, so locals-showing tracebacks print none."""

    def __repr__(self) -> str:
        shown = {k: ("<redacted>" if k.lower() == TOKEN_HEADER else v) for k, v in self.items()}
        return f"SecretHeaders({shown!r})"


def describe(exc: BaseException) -> Failure:
    """A `Failure` from an httpx (or deadline) exception: strings only, no frames."""
    timeout = isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError))
    text = str(exc)
    # A corrupt compressed body may be a network fault; anything else that is not an
    # httpx error is a request that no retry can send.
    fatal = not isinstance(exc, (httpx.HTTPError, asyncio.TimeoutError, TimeoutError, zlib.error))
    return Failure(timeout, f"{type(exc).__name__}: {text}" if text else type(exc).__name__, fatal)


def _fresh(exc: BaseException) -> BaseException:
    """The same interruption without frames, cause or context (see the module docstring)."""
    if isinstance(exc, KeyboardInterrupt):
        return KeyboardInterrupt()
    if isinstance(exc, SystemExit):
        return SystemExit(exc.code if isinstance(exc.code, (int, str)) else None)
    if isinstance(exc, asyncio.CancelledError):
        return asyncio.CancelledError()
    try:
        return type(exc)()
    except Exception:  # an exotic BaseException that needs arguments: keep it as it is
        return exc


class _Decoder:
    """Decodes a body's raw bytes (identity, gzip or deflate), never past `limit` bytes."""

    def __init__(self, encoding: str, limit: int) -> None:
        self.limit = limit
        self.content = bytearray()
        self.over_limit = False
        encoding = encoding.strip().lower()
        self._zlib: Any = None
        self._deflate = encoding == "deflate"
        if encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif self._deflate:
            # Servers send "deflate" both with and without the zlib wrapper (httpx, too,
            # tries the wrapper first and falls back to raw deflate).
            self._zlib = zlib.decompressobj()
        elif encoding not in ("", "identity"):
            raise ValueError(f"unsupported content-encoding {encoding!r}")
        self._started = False

    def feed(self, raw: bytes) -> bool:
        """Add a raw chunk; False once the body went past the limit (stop reading)."""
        if self._zlib is None:
            return self._keep(raw)
        data = raw
        while data:
            room = self.limit - len(self.content) + 1
            try:
                out = self._zlib.decompress(data, room)
            except zlib.error:
                if self._deflate and not self._started:
                    self._deflate = False
                    self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise
            self._started = True
            if not self._keep(out):
                return False
            data = self._zlib.unconsumed_tail
        return True

    def _keep(self, out: bytes) -> bool:
        room = self.limit - len(self.content)
        if len(out) > room:
            self.content += out[:room]
            self.over_limit = True
            return False
        self.content += out
        return True


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
    """Wraps a pool's backend; inert outside an attempt (no deadline set in the context)."""

    def __init__(self, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner if inner is not None else httpcore.SyncBackend()

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
    httpx's own mounts); then `bound_by_deadline` wraps its pools' network backends.
    """
    client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=max_connections))
    bound_by_deadline(client)
    return client


def bound_by_deadline(client: httpx.Client) -> None:
    """Make the socket operations of `client`'s pools (default and proxy mounts) honour
    the attempt's `deadline`.

    The pools' own backends are wrapped, not replaced, and the wrapper changes nothing
    outside an attempt of this package (no deadline in the context), so a caller's client
    keeps behaving as before for its other requests. A transport that is not httpx's
    `HTTPTransport` is left alone: there the deadline is checked between chunks.
    """
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        # httpx builds its httpcore pools with the default backend and offers no argument
        # to change it; tests/unit/test_transport.py fails if these attributes ever move.
        # (httpcore's HTTPProxy is a ConnectionPool that opens its tunnels the same way.)
        if isinstance(pool, httpcore.ConnectionPool) and not isinstance(
            pool._network_backend, _DeadlineBackend
        ):
            pool._network_backend = _DeadlineBackend(pool._network_backend)


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
    """Send one POST and read its body, within `seconds` and up to `limit_for(status)` bytes.

    Raises:
        KeyboardInterrupt, SystemExit: as a fresh exception (no httpx frames).
    """
    at = time.monotonic() + seconds
    outcome: Failure | BaseException
    try:
        with (
            deadline(at),
            client.stream(
                "POST",
                url,
                content=body,
                headers=headers,
                timeout=timeout,
                follow_redirects=False,
            ) as response,
        ):
            decoder = _decoder(response, limit_for)
            if isinstance(decoder, Failure):
                return decoder
            for chunk in _raw(response) or response.iter_raw():
                if not decoder.feed(chunk):
                    break
                if time.monotonic() > at:
                    return Failure(True, "ReadTimeout: the attempt's deadline passed")
            return _reply(response, decoder)
    except Exception as exc:
        outcome = describe(exc)
    except BaseException as exc:
        outcome = _fresh(exc)
    if isinstance(outcome, Failure):
        return outcome
    raise outcome


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
    """`attempt` on the event loop: the whole attempt is cancelled at its deadline.

    Raises:
        asyncio.CancelledError, KeyboardInterrupt: as a fresh exception (no httpx frames).
    """

    async def once() -> Reply | Failure:
        async with client.stream(
            "POST", url, content=body, headers=headers, timeout=timeout, follow_redirects=False
        ) as response:
            decoder = _decoder(response, limit_for)
            if isinstance(decoder, Failure):
                return decoder
            for chunk in _raw(response):
                decoder.feed(chunk)
            if not response.is_stream_consumed:
                async for chunk in response.aiter_raw():
                    if not decoder.feed(chunk):
                        break
            return _reply(response, decoder)

    outcome: Failure | BaseException
    try:
        return await asyncio.wait_for(once(), seconds)
    except Exception as exc:
        outcome = describe(exc)
    except BaseException as exc:
        outcome = _fresh(exc)
    if isinstance(outcome, Failure):
        return outcome
    raise outcome


def _raw(response: httpx.Response) -> list[bytes]:
    """The body already in memory, decoded, when a transport built the response from
    bytes (httpx reads those at once: `MockTransport`, respx); else nothing."""
    return [response.content] if response.is_stream_consumed else []


def _decoder(response: httpx.Response, limit_for: Any) -> _Decoder | Failure:
    limit: int = limit_for(response.status_code)
    encoding = "" if response.is_stream_consumed else response.headers.get("content-encoding", "")
    try:
        return _Decoder(encoding, limit)
    except ValueError as exc:
        return Failure(False, f"DecodingError: {exc}", fatal=True)


def _reply(response: httpx.Response, decoder: _Decoder) -> Reply:
    return Reply(response.status_code, response.headers, bytes(decoder.content), decoder.over_limit)
