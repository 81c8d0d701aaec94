"""Running the app under uvicorn: binding, readiness, limits, in a thread or in the foreground.

The socket is bound here, before uvicorn starts, so a busy port or a bad host is one
clear `ConfigurationError` instead of a log line and ``sys.exit`` inside uvicorn, and so
port 0 (any free port) tells its real number before the server runs.

"Ready" means a client can connect: `run_in_thread` returns and `serve` calls its
``on_ready`` only after uvicorn has finished its startup (lifespan included) and is
listening, and after a real TCP connection to the socket has succeeded.

uvicorn has no deadline for a request's head and no cap on open connections that
closes idle ones, so the HTTP protocol class it picks is extended here (`_guarded`):
a connection past `ServerLimits.max_connections` is closed when accepted, and one that
has not sent a complete head within `header_timeout_s`, or sends a head larger than
`max_header_bytes`, is closed. Body deadlines and sizes are the app's (`_app`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigurationError
from ._limits import ServerLimits
from ._security import warn_if_exposed

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

__all__ = [
    "DEFAULT_STARTUP_TIMEOUT",
    "GRACEFUL_SHUTDOWN_TIMEOUT",
    "LocalServer",
    "bind_socket",
    "make_uvicorn_server",
    "run_in_thread",
    "serve",
    "url_for",
    "uvicorn_log_config",
]

#: Seconds uvicorn lets in-flight requests finish on shutdown; a BM25 batch of 100
#: texts takes ~0.2 s, so 5 s is ample and keeps Ctrl-C and test teardown prompt.
GRACEFUL_SHUTDOWN_TIMEOUT = 5
#: Seconds to wait for a server to accept connections; startup takes ~0.1 s when
#: chromadb is already imported and ~2 s on a cold, busy CI machine.
DEFAULT_STARTUP_TIMEOUT = 30.0
#: The end of a request's head.
_HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class LocalServer:
    """A running local server.

    Attributes:
        url: Base URL, e.g. ``http://127.0.0.1:53817`` (no trailing slash): what
            ``CHROMA_EMBED_URL`` or an embedding function's ``base_url`` takes.
        host: The address it listens on.
        port: The port it listens on.
    """

    url: str
    host: str
    port: int

    @property
    def embed_sparse_url(self) -> str:
        """Full URL of ``POST /embed_sparse``."""
        return f"{self.url}/embed_sparse"


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket for `host` and `port` (0: any free port).

    Args:
        host: Host name or IP address.
        port: Port number, 0 to let the OS choose.

    Returns:
        The bound socket (uvicorn calls ``listen`` on it).

    Raises:
        ConfigurationError: If the host does not resolve or the port cannot be bound.
    """
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"port must be between 0 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigurationError(f"cannot listen on {host}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: lets a restarted server reuse a port still in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def url_for(sock: socket.socket) -> str:
    """The base URL clients use to reach a server listening on `sock`.

    Wildcard addresses (0.0.0.0, ::) are reached through loopback.

    Args:
        sock: A bound socket.

    Returns:
        ``http://host:port`` with IPv6 hosts in brackets.
    """
    host, port = _client_address(sock)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's own logging config, with this package's loggers printed the same way.

    Args:
        level: Log level name for this package's loggers.

    Returns:
        A `logging.config.dictConfig` dictionary.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["chroma_sparse_ef"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


def make_uvicorn_server(
    app: FastAPI,
    *,
    log_level: str | None = "info",
    access_log: bool = True,
    log_config: dict[str, Any] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> uvicorn.Server:
    """A uvicorn server for `app` with its limits, to be run with ``server.run(sockets=[sock])``.

    Args:
        app: The ASGI app; its connection limits are read from ``app.state.limits``
            (set by `create_app`), else `ServerLimits`' defaults.
        log_level: uvicorn's log level.
        access_log: Whether to log one line per request (paths only; headers, and so
            the API key, are never logged).
        log_config: A dictConfig for logging, or None to leave logging as it is.
        on_ready: Called once, on the server's event loop, when startup is complete and
            the socket listens.

    Returns:
        The server, not started.

    Raises:
        ImportError: If uvicorn (the ``server`` extra) is not installed.
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError(
            "the local server needs uvicorn: pip install 'chroma-sparse-ef[server]'"
        ) from exc

    limits = getattr(app.state, "limits", None) or ServerLimits()
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        log_config=log_config,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_TIMEOUT,
        timeout_keep_alive=max(1, round(limits.keep_alive_s)),
        limit_concurrency=limits.max_connections,
        h11_max_incomplete_event_size=limits.max_header_bytes,
    )
    # load() picks the HTTP protocol (httptools when installed, else h11); uvicorn's
    # serve() skips it once done, so the guarded subclass set here is the one used.
    config.load()
    config.http_protocol_class = _guarded(config.http_protocol_class, limits)
    server: uvicorn.Server = _ready_server_class()(config, on_ready)
    return server


@functools.cache
def _ready_server_class() -> Any:
    import uvicorn

    class ReadyServer(uvicorn.Server):
        """uvicorn's server, calling back once startup is done and the socket listens."""

        def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None) -> None:
            super().__init__(config)
            self.on_ready = on_ready

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and not self.should_exit and self.on_ready is not None:
                self.on_ready()

    return ReadyServer


def _guarded(base: type[asyncio.Protocol], limits: ServerLimits) -> type[asyncio.Protocol]:
    """`base` (uvicorn's HTTP protocol) with a connection cap and a deadline for each head.

    Only the asyncio.Protocol methods and uvicorn's ``on_response_complete`` hook are
    extended; the parsing stays uvicorn's.
    """
    proto: Any = base

    class Guarded(proto):  # type: ignore[misc]
        _head_timer: asyncio.TimerHandle | None = None
        _head_bytes = 0
        _head_tail = b""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            # uvicorn's own set of open connections, this one included.
            if len(self.connections) > limits.max_connections:
                transport.close()
                return
            self._await_head()

        def data_received(self, data: bytes) -> None:
            if self._head_timer is not None:
                self._head_bytes += len(data)
                if _HEAD_END in self._head_tail + data:
                    self._stop_head_timer()
                elif self._head_bytes > limits.max_header_bytes:
                    self._stop_head_timer()
                    self.transport.close()
                    return
                else:
                    self._head_tail = data[-3:]
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                # The next request on this kept-alive connection gets its own deadline.
                self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

        def _await_head(self) -> None:
            self._stop_head_timer()
            self._head_bytes = 0
            self._head_tail = b""
            loop = asyncio.get_running_loop()
            self._head_timer = loop.call_later(limits.header_timeout_s, self._head_too_slow)

        def _head_too_slow(self) -> None:
            self._head_timer = None
            cycle = getattr(self, "cycle", None)
            if cycle is not None and not cycle.response_complete:
                # A pipelined request already being served: its body has the app's deadline.
                return
            self.transport.close()

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


def _probe(sock: socket.socket, timeout: float) -> None:
    """Open and close one TCP connection to `sock`: proof that it accepts connections."""
    with socket.create_connection(_client_address(sock), timeout=timeout):
        pass


def _client_address(sock: socket.socket) -> tuple[str, int]:
    """Where a client on this machine connects to reach `sock` (wildcards via loopback)."""
    host, port = sock.getsockname()[:2]
    if host == "0.0.0.0":
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return str(host), int(port)


@contextlib.contextmanager
def run_in_thread(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    access_log: bool = False,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
) -> Iterator[LocalServer]:
    """Run `app` under uvicorn in a background thread for the duration of a ``with`` block.

    Returns (enters the block) only once the server accepts connections: uvicorn's
    startup is complete and a TCP connection to the socket has succeeded.

    Args:
        app: The app, usually from `create_app`; its limits apply.
        host: Address to listen on; loopback by default.
        port: Port; 0 picks a free one (read it from `LocalServer.port` or `.url`).
        access_log: Log one line per request to the ``uvicorn.access`` logger.
        startup_timeout: Seconds to wait for the server to accept connections.

    Yields:
        The running server. It is stopped (in-flight requests finish) on exit.

    Raises:
        ConfigurationError: If the port cannot be bound.
        RuntimeError: If the server fails to start within `startup_timeout`.
    """
    sock = bind_socket(host, port)
    with sock:
        warn_if_exposed(host, has_api_key=_requires_key(app))
        ready = threading.Event()
        # log_config=None: leave the host program's logging (and pytest's caplog) alone.
        server = make_uvicorn_server(
            app, log_level=None, access_log=access_log, log_config=None, on_ready=ready.set
        )
        bound_port = int(sock.getsockname()[1])
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"chroma-sparse-ef-server-{bound_port}",
            daemon=True,
        )
        thread.start()
        try:
            _wait_ready(ready, thread, startup_timeout)
            _probe(sock, startup_timeout)
            yield LocalServer(url=url_for(sock), host=host, port=bound_port)
        finally:
            server.should_exit = True
            thread.join(startup_timeout)


def _wait_ready(ready: threading.Event, thread: threading.Thread, timeout: float) -> None:
    """Block until the server is ready, its thread dies, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    # Short waits so a startup failure (the thread ends) is reported at once.
    while not ready.wait(0.05):
        if not thread.is_alive():
            raise RuntimeError("the local embed server stopped during startup; see its log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the local embed server did not start within {timeout} s")


def serve(
    app: FastAPI,
    sock: socket.socket,
    *,
    log_level: str = "info",
    access_log: bool = True,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve `app` on the bound `sock` in the foreground until Ctrl-C or SIGTERM.

    Args:
        app: The app, usually from `create_app`; its limits apply.
        sock: A socket from `bind_socket`.
        log_level: Log level of uvicorn and of this package's loggers.
        access_log: Log one line per request (never headers).
        on_ready: Called with the base URL once the socket accepts connections.
    """

    def ready() -> None:
        # Connecting from the event loop's own thread is fine: the kernel completes the
        # handshake from the listen backlog without the loop's help.
        _probe(sock, DEFAULT_STARTUP_TIMEOUT)
        if on_ready is not None:
            on_ready(url_for(sock))

    server = make_uvicorn_server(
        app,
        log_level=log_level,
        access_log=access_log,
        log_config=uvicorn_log_config(log_level),
        on_ready=ready,
    )
    # After the server is built: building its Config applies the log config.
    warn_if_exposed(str(sock.getsockname()[0]), has_api_key=_requires_key(app))
    server.run(sockets=[sock])


def _requires_key(app: FastAPI) -> bool:
    """Whether `app` was built with an API key (`create_app` records it)."""
    return bool(getattr(app.state, "requires_key", False))
