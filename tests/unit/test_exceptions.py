"""The error tree: openai-style kinds side by side, old names still caught, public paths."""

from __future__ import annotations

import pickle
import re

import pytest

from chroma_sparse_ef import _exceptions
from chroma_sparse_ef._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    CorruptSparseVectorError,
    DenseOnlyModelError,
    EmbeddingError,
    HybridError,
    HybridLayoutError,
    HybridSyncError,
    InternalServerError,
    InvalidInputError,
    InvalidResponseError,
    RateLimitError,
    ServiceError,
    UnsupportedModelError,
    UnsupportedSearchError,
)

ALL = [getattr(_exceptions, name) for name in _exceptions.__all__]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_error_shows_its_public_path(cls: type[EmbeddingError]) -> None:
    """Tracebacks print chroma_sparse_ef.X, not the private module."""
    assert cls.__module__ == "chroma_sparse_ef"
    assert issubclass(cls, EmbeddingError)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_error_survives_pickling_with_its_attributes(cls: type[EmbeddingError]) -> None:
    """Errors cross process boundaries (multiprocessing, xdist) with status and model."""
    err = cls.__new__(cls)
    EmbeddingError.__init__(err, "boom", status_code=503, model="m", request_id="req-1")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert (back.message, back.status_code, back.model, back.request_id) == (
        "boom",
        503,
        "m",
        "req-1",
    )


def test_the_tree_in_the_docstring_names_every_error() -> None:
    """The drawing in _exceptions.py stays true: every exported error appears in it."""
    drawn = set(re.findall(r"[├└]── (\w+)", _exceptions.__doc__ or ""))
    drawn.add("EmbeddingError")
    assert drawn == set(_exceptions.__all__)


def test_connection_failures_and_timeouts_are_not_status_errors() -> None:
    """No response means no status: connection errors sit beside APIStatusError."""
    assert not issubclass(APIConnectionError, APIStatusError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(APIConnectionError, APIError)


def test_old_names_still_catch_what_they_caught() -> None:
    """ServiceError still catches connection failures, timeouts and 5xx; a 5xx is still
    an APIStatusError; a dense-only model is still an UnsupportedModelError."""
    for cls in (APIConnectionError, APITimeoutError, InternalServerError):
        assert issubclass(cls, ServiceError)
    assert issubclass(InternalServerError, APIStatusError)
    assert issubclass(DenseOnlyModelError, UnsupportedModelError)
    assert issubclass(RateLimitError, APIStatusError)


def test_construction_time_refusals_are_configuration_errors() -> None:
    """What is refused before any request is a ConfigurationError (a ValueError)."""
    assert issubclass(DenseOnlyModelError, ConfigurationError)
    assert issubclass(DenseOnlyModelError, ValueError)


def test_hybrid_errors_have_their_own_branch_and_keep_their_old_bases() -> None:
    """HybridError gathers the hybrid errors; each keeps the base it had in 0.x."""
    for cls in (
        HybridLayoutError,
        HybridSyncError,
        UnsupportedSearchError,
        CorruptSparseVectorError,
    ):
        assert issubclass(cls, HybridError)
    assert issubclass(HybridLayoutError, ConfigurationError)
    assert issubclass(UnsupportedSearchError, InvalidInputError)
    assert issubclass(CorruptSparseVectorError, ValueError)
    assert not issubclass(InvalidResponseError, HybridError)
