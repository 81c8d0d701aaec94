"""Running the app under uvicorn: binding, logging, and the blocking `serve` used by the CLI.

The socket is bound here, before uvicorn starts, so a busy port or a bad host is one
clear `ConfigurationError` instead of a log line and ``sys.exit`` inside uvicorn, and so
port 0 (any free port) tells its real number before the server runs.
"""

from __future__ import annotations

import copy
import socket
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigurationError

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

__all__ = [
    "GRACEFUL_SHUTDOWN_TIMEOUT",
    "bind_socket",
    "make_uvicorn_server",
    "url_for",
    "uvicorn_log_config",
]

#: Seconds uvicorn lets in-flight requests finish on shutdown; a BM25 batch of 100
#: texts takes ~0.2 s, so 5 s is ample and keeps Ctrl-C and test teardown prompt.
GRACEFUL_SHUTDOWN_TIMEOUT = 5


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
    host, port = sock.getsockname()[:2]
    if host == "0.0.0.0":
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
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
) -> uvicorn.Server:
    """A uvicorn server for `app`, to be run with ``server.run(sockets=[sock])``.

    Args:
        app: The ASGI app.
        log_level: uvicorn's log level.
        access_log: Whether to log one line per request (paths only; headers, and so
            the API key, are never logged).
        log_config: A dictConfig for logging, or None to leave logging as it is.

    Returns:
        The server, not started.
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        log_config=log_config,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_TIMEOUT,
    )
    return uvicorn.Server(config)
