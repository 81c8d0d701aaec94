"""Test kit: a local ``/embed_sparse`` server for your tests, scripts and notebooks.

Installed as a pytest plugin (entry point ``chroma_sparse_ef``), so these fixtures are
available in any project that installs ``chroma-sparse-ef[server]``:

- `embed_server` (session): a running `LocalServer` with default options.
- `embed_server_url` (session): its base URL, e.g. ``http://127.0.0.1:53817``.
- `embed_server_env` (function): points ``CHROMA_EMBED_URL`` at that server and sets a
  placeholder ``CHROMA_API_KEY`` (the default server accepts any token).
- `embed_server_factory` (function): starts servers with options (``api_key``,
  ``rate_limit``, ``latency_ms``, ...), stopped when the test ends.

Example::

    def test_my_pipeline(embed_server_url):
        ef = ChromaSparseEmbeddingFunction(api_key="test", base_url=embed_server_url)
        assert ef(["hello world"])

Outside pytest, `run_local_server` is a context manager::

    from chroma_sparse_ef.testing import run_local_server

    with run_local_server(latency_ms=20) as server:
        print(server.url)

The server runs uvicorn in a background thread of the current process
(`chroma_sparse_ef.server.run_in_thread`, which this wraps); its vectors are BM25 weights (see `chroma_sparse_ef.server.Bm25Backend`), not SPLADE ones. This module
is imported on every pytest run of every project that installs the package, so it
imports nothing heavy at module level: FastAPI and uvicorn load when a server starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from .server import DEFAULT_STARTUP_TIMEOUT, LocalServer

__all__ = ["LocalServer", "run_local_server"]

#: Placeholder key `embed_server_env` sets: servers without a key accept any token.
PLACEHOLDER_API_KEY = "chroma-sparse-ef-test-key"


@contextlib.contextmanager
def run_local_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    access_log: bool = False,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    **app_options: Any,
) -> Iterator[LocalServer]:
    """Run the local server in a background thread for the duration of a ``with`` block.

    `chroma_sparse_ef.server.run_in_thread` of `chroma_sparse_ef.server.create_app`:
    it returns only once the server accepts connections.

    Args:
        host: Address to listen on; loopback by default (a warning is logged for a
            non-loopback address without ``api_key``).
        port: Port; 0 picks a free one (read it from `LocalServer.port` or `.url`).
        access_log: Log one line per request to the ``uvicorn.access`` logger.
        startup_timeout: Seconds to wait for the server to accept connections.
        **app_options: Passed to `chroma_sparse_ef.server.create_app`: ``api_key``,
            ``rate_limit`` (e.g. ``"10/s"``), ``latency_ms``, ``backends``, ``limits``,
            ``max_body_bytes``, ``max_text_chars``.

    Yields:
        The running server. It is stopped (in-flight requests finish) on exit.

    Raises:
        ConfigurationError: If an option is invalid or the port cannot be bound.
        RuntimeError: If the server fails to start within `startup_timeout`.
        ImportError: If the ``server`` extra is not installed.
    """
    from .server import create_app, run_in_thread

    app = create_app(**app_options)
    with run_in_thread(
        app, host, port, access_log=access_log, startup_timeout=startup_timeout
    ) as server:
        yield server


try:
    import pytest
except ImportError:  # pragma: no cover - the kit works without pytest, minus fixtures
    pass
else:

    @pytest.fixture(scope="session")
    def embed_server() -> Iterator[LocalServer]:
        """A local /embed_sparse server for the whole test session (no key, BM25)."""
        with run_local_server() as server:
            yield server

    @pytest.fixture(scope="session")
    def embed_server_url(embed_server: LocalServer) -> str:
        """Base URL of the session's local /embed_sparse server."""
        return embed_server.url

    @pytest.fixture
    def embed_server_env(embed_server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> str:
        """Point CHROMA_EMBED_URL at the local server and set a placeholder CHROMA_API_KEY.

        Returns the base URL. Both variables are restored after the test.
        """
        monkeypatch.setenv("CHROMA_EMBED_URL", embed_server.url)
        monkeypatch.setenv("CHROMA_API_KEY", PLACEHOLDER_API_KEY)
        return embed_server.url

    @pytest.fixture
    def embed_server_factory() -> Iterator[Callable[..., LocalServer]]:
        """Start local servers with options; all are stopped when the test ends.

        Call it with `run_local_server`'s arguments, e.g.
        ``embed_server_factory(api_key="k", rate_limit="1/min")``.
        """
        with contextlib.ExitStack() as stack:

            def start(**options: Any) -> LocalServer:
                return stack.enter_context(run_local_server(**options))

            yield start
