"""Sparse embeddings from Chroma's embedding service, and hybrid search on any Chroma."""

from __future__ import annotations

from ._corpus import Doc, stdlib_docstrings
from ._dense import DenseChoice, default_dense_function
from ._embedding_function import ChromaSparseEmbeddingFunction
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    CorruptSparseVectorError,
    DenseOnlyModelError,
    EmbeddingError,
    HybridError,
    HybridLayoutError,
    HybridSyncError,
    InternalServerError,
    InvalidInputError,
    InvalidRequestError,
    InvalidResponseError,
    MissingAPIKeyError,
    RateLimitError,
    ServiceError,
    UnsupportedModelError,
    UnsupportedSearchError,
)
from ._hashing import HashingEmbeddingFunction
from ._models import DEFAULT_MODEL, MODELS, ModelInfo
from ._usage import Usage
from ._version import __version__
from .hybrid import (
    HybridCollection,
    PendingRecord,
    SearchHit,
    SearchResults,
    TermMatch,
    WriteSummary,
)

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "ChromaSparseEmbeddingFunction",
    "ConfigurationError",
    "CorruptSparseVectorError",
    "DenseChoice",
    "DenseOnlyModelError",
    "Doc",
    "EmbeddingError",
    "HashingEmbeddingFunction",
    "HybridCollection",
    "HybridError",
    "HybridLayoutError",
    "HybridSyncError",
    "InternalServerError",
    "InvalidInputError",
    "InvalidRequestError",
    "InvalidResponseError",
    "MissingAPIKeyError",
    "ModelInfo",
    "PendingRecord",
    "RateLimitError",
    "SearchHit",
    "SearchResults",
    "ServiceError",
    "TermMatch",
    "UnsupportedModelError",
    "UnsupportedSearchError",
    "Usage",
    "WriteSummary",
    "__version__",
    "default_dense_function",
    "stdlib_docstrings",
]
