"""Sparse embeddings from Chroma's embedding service, and hybrid search on any Chroma."""

from __future__ import annotations

from ._corpus import Doc, stdlib_docstrings
from ._dense import DenseChoice, default_dense_function
from ._embedding_function import ChromaSparseEmbeddingFunction
from ._exceptions import (
    APIStatusError,
    AuthenticationError,
    ConfigurationError,
    EmbeddingError,
    InvalidInputError,
    InvalidRequestError,
    InvalidResponseError,
    MissingAPIKeyError,
    RateLimitError,
    ServiceError,
    UnsupportedModelError,
)
from ._hashing import HashingEmbeddingFunction
from ._models import DEFAULT_MODEL, MODELS, ModelInfo
from ._usage import Usage
from ._version import __version__

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "APIStatusError",
    "AuthenticationError",
    "ChromaSparseEmbeddingFunction",
    "ConfigurationError",
    "DenseChoice",
    "Doc",
    "EmbeddingError",
    "HashingEmbeddingFunction",
    "InvalidInputError",
    "InvalidRequestError",
    "InvalidResponseError",
    "MissingAPIKeyError",
    "ModelInfo",
    "RateLimitError",
    "ServiceError",
    "UnsupportedModelError",
    "Usage",
    "__version__",
    "default_dense_function",
    "stdlib_docstrings",
]
