"""The local ``/embed_sparse`` server: Chroma's embedding API on 127.0.0.1.

Like stripe-mock for Stripe: the same contract (`embed_sparse.openapi.yaml`, packaged
beside this file) for offline development, CI and tests. Vectors are real but come from
a local backend, announced as such: BM25 by default, or real SPLADE from a local model
directory (`SpladeBackend`, numpy only). Needs the ``server`` extra::

    pip install 'chroma-sparse-ef[server]'

Run it with ``chroma-sparse-ef serve``; from Python with `run_in_thread` (a context
manager, what the CLI's ``--local``, the demo and the test kit all use) or `serve` (in
the foreground); in tests with the fixtures of `chroma_sparse_ef.testing`::

    from chroma_sparse_ef.server import create_app, run_in_thread

    with run_in_thread(create_app(latency_ms=20)) as server:
        print(server.url)

Names load on first use (PEP 562), so importing this package, or a setting such as
``DEFAULT_PORT``, costs nothing and does not need FastAPI.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import create_app
    from ._backends import SPARSE_MODELS, Bm25Backend, EmbedOutput, SparseBackend, SparseItem
    from ._limits import ServerLimits
    from ._ratelimit import RateLimit
    from ._security import is_loopback, warn_if_exposed
    from ._serve import DEFAULT_STARTUP_TIMEOUT, LocalServer, bind_socket, run_in_thread, serve
    from ._settings import API_KEY_ENV_VAR, DEFAULT_HOST, DEFAULT_PORT
    from ._splade import SpladeBackend

__all__ = [
    "API_KEY_ENV_VAR",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_STARTUP_TIMEOUT",
    "SPARSE_MODELS",
    "SPEC_PATH",
    "Bm25Backend",
    "EmbedOutput",
    "LocalServer",
    "RateLimit",
    "ServerLimits",
    "SparseBackend",
    "SparseItem",
    "SpladeBackend",
    "bind_socket",
    "create_app",
    "is_loopback",
    "run_in_thread",
    "serve",
    "warn_if_exposed",
]

#: The packaged copy of the contract the server implements.
SPEC_PATH = Path(__file__).with_name("embed_sparse.openapi.yaml")

_HOMES = {
    "create_app": "._app",
    "SPARSE_MODELS": "._backends",
    "Bm25Backend": "._backends",
    "EmbedOutput": "._backends",
    "SparseBackend": "._backends",
    "SparseItem": "._backends",
    "ServerLimits": "._limits",
    "LocalServer": "._serve",
    "DEFAULT_STARTUP_TIMEOUT": "._serve",
    "bind_socket": "._serve",
    "run_in_thread": "._serve",
    "serve": "._serve",
    "API_KEY_ENV_VAR": "._settings",
    "DEFAULT_HOST": "._settings",
    "DEFAULT_PORT": "._settings",
    "RateLimit": "._ratelimit",
    "is_loopback": "._security",
    "warn_if_exposed": "._security",
    "SpladeBackend": "._splade",
}
#: Packages of the ``server`` extra (and what they pull in) that may be missing.
_EXTRA_PACKAGES = frozenset(
    {"fastapi", "starlette", "uvicorn", "anyio", "pydantic", "tokenizers", "snowballstemmer"}
)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(home, __name__)
    except ImportError as exc:
        if exc.name in _EXTRA_PACKAGES:
            raise ImportError(
                f"the local server needs {exc.name}: pip install 'chroma-sparse-ef[server]'"
            ) from exc
        raise
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted(__all__)
