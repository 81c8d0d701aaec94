"""Sparse embeddings from Chroma's embedding service, and hybrid search on any Chroma."""

from __future__ import annotations

from ._exceptions import (
    APIStatusError,
    AuthenticationError,
    ConfigurationError,
    EmbeddingError,
    InvalidRequestError,
    InvalidResponseError,
    MissingAPIKeyError,
    RateLimitError,
    ServiceError,
    UnsupportedModelError,
)
from ._version import __version__

__all__ = [
    "APIStatusError",
    "AuthenticationError",
    "ConfigurationError",
    "EmbeddingError",
    "InvalidRequestError",
    "InvalidResponseError",
    "MissingAPIKeyError",
    "RateLimitError",
    "ServiceError",
    "UnsupportedModelError",
    "__version__",
]
