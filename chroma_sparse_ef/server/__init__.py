"""The local ``/embed_sparse`` server: Chroma's embedding API on 127.0.0.1.

Like stripe-mock for Stripe: the same contract (`embed_sparse.openapi.yaml`, packaged
beside this file) for offline development, CI and tests. Vectors are real but come from
a local backend, announced as such: BM25 by default, or real SPLADE from a local model
directory (`SpladeBackend`, numpy only). Needs the ``server`` extra::

    pip install 'chroma-sparse-ef[server]'

Run it with ``chroma-sparse-ef serve``, or in tests with `chroma_sparse_ef.testing`.

Names load on first use (PEP 562), so importing a submodule such as ``_settings`` (the
CLI does) costs nothing and does not need FastAPI.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import create_app
    from ._backends import SPARSE_MODELS, Bm25Backend, EmbedOutput, SparseBackend, SparseItem
    from ._ratelimit import RateLimit
    from ._security import is_loopback, warn_if_exposed
    from ._splade import SpladeBackend

__all__ = [
    "SPARSE_MODELS",
    "SPEC_PATH",
    "Bm25Backend",
    "EmbedOutput",
    "RateLimit",
    "SparseBackend",
    "SparseItem",
    "SpladeBackend",
    "create_app",
    "is_loopback",
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
    "RateLimit": "._ratelimit",
    "is_loopback": "._security",
    "warn_if_exposed": "._security",
    "SpladeBackend": "._splade",
}
#: Packages of the ``server`` extra (and what they pull in) that may be missing.
_EXTRA_PACKAGES = frozenset({"fastapi", "starlette", "snowballstemmer"})


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
