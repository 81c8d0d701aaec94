"""A text query ranks the same whether its local plan is built directly or read from a Search.

Two routes reach embedded Chroma: a text query's plan is built from its arguments
(`plan_from_text`); a ``Search`` a user passes is translated (`plan_from_search`). Run on
a real EphemeralClient collection of standard-library docstrings, embedded by the local
/embed_sparse server (BM25) and the offline hashing dense function, both routes must
return the same rows, scores, per-leg ranks and matching terms.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import chromadb
import pytest
from chromadb.execution.expression import K

from chroma_sparse_ef import ChromaSparseEmbeddingFunction, HashingEmbeddingFunction
from chroma_sparse_ef._corpus import stdlib_docstrings
from chroma_sparse_ef.hybrid import HybridCollection, build_native_search, plan_from_search
from chroma_sparse_ef.hybrid._plan import plan_from_text

#: Enough records that a candidate limit of 5 leaves most of them out of each leg, so
#: missing ranks, defaults and filters all shape the result.
CORPUS_SIZE = 300

QUERIES = (
    "parse a JSON document into Python objects",
    "socket timeout",
    "acquire a lock from another thread",
    "regular expression match groups",
)

ARGUMENTS: list[dict[str, Any]] = [
    {},
    {"limit": 25},
    {"limit": 5, "offset": 3},
    {"candidate_limit": 5, "limit": 10},
    {"candidate_limit": 5, "sparse_candidate_limit": 20, "limit": 30},
    {"candidate_limit": 8, "missing_rank": None, "limit": 20},
    {"candidate_limit": 8, "missing_rank": 1000},
    {"weights": [3.0, 1.0], "candidate_limit": 10},
    {"weights": [0.2, 0.8], "normalize": True, "k": 5},
    {"weights": [0.0, 1.0], "k": 1},
    {"mode": "dense", "limit": 7},
    {"mode": "sparse", "limit": 7, "candidate_limit": 4},
    {"where": {"kind": "function"}, "candidate_limit": 10},
    {"where": (K("kind") == "class") | (K("module") == "json"), "limit": 15},
    {"where": K.DOCUMENT.contains("the") & (K("kind") != "module")},
    {"where": K.DOCUMENT.regex("(?i)thread")},
    {"select": ["#document", "module", K.SCORE]},
    {"select": ["#embedding", "#metadata"], "limit": 3},
]


@pytest.fixture(scope="module")
def docs(embed_server_url: str) -> Iterator[HybridCollection]:
    """A hybrid collection on EphemeralClient holding CORPUS_SIZE stdlib docstrings."""
    corpus = stdlib_docstrings(limit=CORPUS_SIZE)
    with ChromaSparseEmbeddingFunction(base_url=embed_server_url, fetch_labels=True) as sparse:
        collection = HybridCollection.get_or_create(
            chromadb.EphemeralClient(),
            f"routes-{uuid.uuid4().hex}",
            sparse_embedding_function=sparse,
            embedding_function=HashingEmbeddingFunction(),
        )
        collection.add(
            ids=[doc.id for doc in corpus],
            documents=[doc.text for doc in corpus],
            metadatas=[{"module": doc.module, "kind": doc.kind} for doc in corpus],
        )
        yield collection
        collection.close()


def _label(kwargs: dict[str, Any]) -> str:
    return ",".join(f"{name}={value!r}" for name, value in kwargs.items()) or "defaults"


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("kwargs", ARGUMENTS, ids=map(_label, ARGUMENTS))
def test_text_plan_and_search_plan_rank_identically(
    docs: HybridCollection, query: str, kwargs: dict[str, Any]
) -> None:
    """plan_from_text and plan_from_search(build_native_search) give identical results."""
    backend: Any = docs._backend._search  # LocalSearch: runs a LocalPlan as is
    direct = backend.search(plan_from_text(query, sparse_key=docs.sparse_key, **kwargs))
    search = build_native_search(query, sparse_key=docs.sparse_key, **kwargs)
    translated = backend.search(plan_from_search(search, sparse_key=docs.sparse_key))
    assert direct == translated
    assert direct.ids, "every case should rank something, or it compares nothing"


@pytest.mark.parametrize("kwargs", ARGUMENTS[:8], ids=map(_label, ARGUMENTS[:8]))
def test_search_by_text_and_by_the_native_search_agree(
    docs: HybridCollection, kwargs: dict[str, Any]
) -> None:
    """HybridCollection.search(text) equals .search(Search) of the same query, publicly."""
    query = QUERIES[0]
    by_text = docs.search(query, **kwargs)
    by_search = docs.search(build_native_search(query, sparse_key=docs.sparse_key, **kwargs))
    assert by_text == by_search
    assert by_text.ids


def test_routes_differ_from_a_changed_argument(docs: HybridCollection) -> None:
    """The comparison can fail: a different candidate limit changes the ranking."""
    backend: Any = docs._backend._search  # LocalSearch: runs a LocalPlan as is
    query = QUERIES[0]
    small = backend.search(plan_from_text(query, sparse_key=docs.sparse_key, candidate_limit=3))
    large = backend.search(plan_from_text(query, sparse_key=docs.sparse_key, candidate_limit=50))
    assert small != large
