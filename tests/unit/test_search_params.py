"""Search parameters are refused, named, before any embedding call or read, on both routes."""

from __future__ import annotations

import math
import uuid
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.api.types import (
    Documents,
    EmbeddingFunction,
    Embeddings,
    SparseEmbeddingFunction,
    SparseVector,
    SparseVectors,
)

from chroma_sparse_ef import InvalidInputError
from chroma_sparse_ef.hybrid import HybridCollection, build_native_search
from chroma_sparse_ef.hybrid._plan import plan_from_text

SPARSE = "sparse_embedding"

pytestmark = pytest.mark.filterwarnings(
    "ignore:The EmbeddingFunction class does not implement name:DeprecationWarning"
)

#: (keyword arguments, the start of the message), each naming the parameter.
BAD_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"weights": [math.nan, 1.0]}, "weights must be finite"),
    ({"weights": (1.0, math.inf)}, "weights must be finite"),
    ({"weights": [-math.inf, 1.0]}, "All weights must be non-negative"),
    ({"weights": [1.0, -0.5]}, "All weights must be non-negative"),
    ({"weights": np.array([math.nan, 1.0])}, "weights must be finite"),
    ({"weights": ["1", 1.0]}, "weights must be numbers"),
    ({"weights": [1.0]}, r"Number of weights \(1\) must match number of ranks \(2\)"),
    ({"weights": "11"}, "weights must be a sequence of numbers"),
    ({"k": math.nan}, "k must be finite"),
    ({"k": math.inf}, "k must be finite"),
    ({"k": -math.inf}, "k must be positive"),
    ({"k": 0}, "k must be positive"),
    ({"k": -1}, "k must be positive"),
    ({"k": "60"}, "k must be a positive number"),
    ({"k": math.nan, "mode": "dense"}, "k must be finite"),
    ({"limit": 2.0}, "limit must be a positive integer, got 2.0"),
    ({"limit": 0}, "limit must be a positive integer"),
    ({"limit": True}, "limit must be a positive integer"),
    ({"limit": "10"}, "limit must be a positive integer"),
    ({"candidate_limit": 10.5}, "candidate_limit must be a positive integer"),
    ({"candidate_limit": math.nan}, "candidate_limit must be a positive integer"),
    ({"candidate_limit": -1}, "candidate_limit must be a positive integer"),
    ({"sparse_candidate_limit": 3.0}, "sparse_candidate_limit must be a positive integer"),
    ({"sparse_candidate_limit": 0}, "sparse_candidate_limit must be a positive integer"),
    ({"offset": -1}, "offset must be a non-negative integer"),
    ({"offset": 1.0}, "offset must be a non-negative integer"),
    ({"missing_rank": math.nan}, "missing_rank must be"),
    ({"missing_rank": math.inf}, "missing_rank must be"),
    ({"missing_rank": -1}, "missing_rank must be"),
    ({"missing_rank": "last"}, "missing_rank must be"),
    ({"mode": "both"}, "mode must be 'hybrid', 'dense' or 'sparse'"),
    ({"mode": "dense", "weights": [1.0, 1.0]}, "weights and normalize apply to hybrid mode"),
    ({"weights": [0.0, 0.0], "normalize": True}, "Sum of weights must be positive"),
    ({"where": {"a": {"$bogus": 1}}}, "where is not a valid filter"),
    ({"where": "lang == en"}, "where must be a chromadb Where expression"),
    ({"select": "#document"}, "select must be a list of keys"),
    ({"select": ["#document", 3]}, "select holds 3"),
]


def _ids(case: tuple[dict[str, Any], str]) -> str:
    return ",".join(f"{name}={value!r}" for name, value in case[0].items())


@pytest.mark.parametrize(("kwargs", "message"), BAD_ARGUMENTS, ids=map(_ids, BAD_ARGUMENTS))
def test_both_builders_refuse_a_bad_argument_with_the_same_named_error(
    kwargs: dict[str, Any], message: str
) -> None:
    """build_native_search (Cloud) and plan_from_text (local) raise the same InvalidInputError."""
    with pytest.raises(InvalidInputError, match=f"^{message}") as native:
        build_native_search("q", sparse_key=SPARSE, **kwargs)
    with pytest.raises(InvalidInputError, match=f"^{message}") as local:
        plan_from_text("q", sparse_key=SPARSE, **kwargs)
    assert str(native.value) == str(local.value)
    assert isinstance(native.value, ValueError)


@pytest.mark.parametrize("query", ["", "   ", None, 3])
def test_both_builders_refuse_an_empty_or_non_text_query(query: Any) -> None:
    """A text search needs non-empty text."""
    for build in (build_native_search, plan_from_text):
        with pytest.raises(InvalidInputError, match="query must be a non-empty string"):
            build(query, sparse_key=SPARSE)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"k": 0.5, "weights": [0, 3]},
        {"k": 1e9, "weights": np.array([2.0, 0.0]), "normalize": True},
        {"limit": np.int64(5), "candidate_limit": np.int32(7), "offset": np.int16(0)},
        {"missing_rank": 0},
        {"missing_rank": 3.5},
    ],
)
def test_valid_edge_values_are_accepted_by_both_builders(kwargs: dict[str, Any]) -> None:
    """Zero weights, numpy numbers and a zero missing rank are legitimate."""
    search = build_native_search("q", sparse_key=SPARSE, **kwargs)
    assert search.to_dict()["limit"]["limit"] == int(kwargs.get("limit", 10))
    assert plan_from_text("q", sparse_key=SPARSE, **kwargs).legs


def test_numpy_counts_reach_chroma_as_python_ints() -> None:
    """A numpy limit is sent as an int: JSON cannot carry numpy integers."""
    counts: dict[str, Any] = {"limit": np.int64(5), "candidate_limit": np.int64(7)}
    payload = build_native_search("q", sparse_key=SPARSE, **counts).to_dict()
    assert type(payload["limit"]["limit"]) is int
    dense_knn = payload["rank"]["$mul"][1]["$sum"][0]["$div"]["right"]["$sum"][1]["$knn"]
    assert type(dense_knn["limit"]) is int


# --- HybridCollection.search: refused before any embedding call or read ------------------


class CountingSparse(SparseEmbeddingFunction[Documents]):
    """A sparse function that counts its calls: a query embedded means work was done."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, input: Documents) -> SparseVectors:
        self.calls += 1
        return [SparseVector(indices=[len(text)], values=[1.0]) for text in input]

    def embed_query(self, input: Documents) -> SparseVectors:
        return self(input)

    @staticmethod
    def name() -> str:
        return "test_counting_sparse"

    def get_config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> CountingSparse:
        return CountingSparse()


class CountingDense(EmbeddingFunction[Documents]):
    """A two-dimensional dense function that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, input: Documents) -> Embeddings:
        self.calls += 1
        return [np.array([len(text), 1.0], dtype=np.float32) for text in input]


@pytest.mark.parametrize(("kwargs", "message"), BAD_ARGUMENTS, ids=map(_ids, BAD_ARGUMENTS))
def test_hybrid_collection_search_refuses_before_embedding_or_reading(
    kwargs: dict[str, Any], message: str
) -> None:
    """On a real embedded collection, a bad argument raises before either leg is embedded."""
    sparse, dense = CountingSparse(), CountingDense()
    docs = HybridCollection.get_or_create(
        chromadb.EphemeralClient(),
        f"params-{uuid.uuid4().hex}",
        sparse_embedding_function=sparse,
        embedding_function=dense,
    )
    docs.add(ids=["a", "b"], documents=["alpha", "beta gamma"])
    assert docs.search("alpha", limit=1).ids  # the collection answers good arguments
    sparse.calls = dense.calls = 0
    with pytest.raises(InvalidInputError, match=f"^{message}"):
        docs.search("alpha", **kwargs)
    assert (sparse.calls, dense.calls) == (0, 0)
