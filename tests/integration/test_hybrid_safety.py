"""HybridCollection keeps its promises when things go wrong: spaces, half-writes, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.base_types import SparseVector

from chroma_sparse_ef import ChromaSparseEmbeddingFunction, HybridLayoutError, InvalidInputError
from chroma_sparse_ef.hybrid import HybridCollection
from tests.integration.chroma_doubles import HashEmbedding


@pytest.fixture
def sparse_ef(embed_server_url: str) -> Iterator[ChromaSparseEmbeddingFunction]:
    with ChromaSparseEmbeddingFunction(base_url=embed_server_url) as ef:
        yield ef


def open_docs(client: Any, sparse_ef: Any, name: str = "docs") -> HybridCollection:
    return HybridCollection.get_or_create(
        client, name, sparse_embedding_function=sparse_ef, embedding_function=HashEmbedding()
    )


@pytest.mark.parametrize("how", ["get_or_create", "get"])
def test_reopening_with_another_model_is_refused(
    tmp_path: Path, sparse_ef: ChromaSparseEmbeddingFunction, embed_server_url: str, how: str
) -> None:
    """SPLADE vectors and BGE-M3 vectors never end up in one collection."""
    client = chromadb.PersistentClient(str(tmp_path / "db"))
    open_docs(client, sparse_ef).add(ids=["a"], documents=["sparse vectors"])
    other = ChromaSparseEmbeddingFunction(base_url=embed_server_url, model="BAAI/bge-m3")

    def reopen() -> HybridCollection:
        if how == "get_or_create":
            return open_docs(client, other)
        return HybridCollection.open(
            client, "docs", embedding_function=HashEmbedding(), sparse_embedding_function=other
        )

    with pytest.raises(HybridLayoutError, match="model"):
        reopen()


def test_reopening_with_the_same_settings_is_accepted(
    tmp_path: Path, sparse_ef: ChromaSparseEmbeddingFunction, embed_server_url: str
) -> None:
    """An equal function, even a new instance with other batching, opens the collection."""
    client = chromadb.PersistentClient(str(tmp_path / "db"))
    open_docs(client, sparse_ef).add(ids=["a"], documents=["sparse vectors"])
    again = ChromaSparseEmbeddingFunction(base_url=embed_server_url, batch_size=10)
    assert open_docs(client, again).count() == 1


def test_a_chroma_failure_mid_write_never_leaves_search_stale(
    sparse_ef: ChromaSparseEmbeddingFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches Chroma took before failing are found by the next search (EphemeralClient)."""
    client = chromadb.EphemeralClient()
    monkeypatch.setattr(client, "get_max_batch_size", lambda: 3)
    docs = open_docs(client, sparse_ef, name="half-written")
    docs.add(ids=[f"d{i}" for i in range(6)], documents=[f"plain text {i}" for i in range(6)])
    assert docs.search("plain", mode="sparse")  # the cache is built

    real_update = docs.collection.update
    calls = {"n": 0}

    def failing_second_batch(**kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("chroma went away")
        real_update(**kwargs)

    monkeypatch.setattr(docs.collection, "update", failing_second_batch)
    with pytest.raises(RuntimeError, match="went away"):
        docs.update(ids=[f"d{i}" for i in range(6)], documents=[f"quokka {i}" for i in range(6)])
    monkeypatch.setattr(docs.collection, "update", real_update)

    hits = docs.search("quokka", mode="sparse", limit=10)
    assert sorted(hit.id for hit in hits) == ["d0", "d1", "d2"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"ids": [""], "documents": ["x"]}, "empty"),
        ({"ids": ["a"], "documents": ["x"], "metadatas": [{"#document": "y"}]}, "'#'"),
        ({"ids": ["a"], "documents": ["x"], "metadatas": [{"k": None}]}, "None"),
        (
            {"ids": ["a"], "documents": ["x"], "metadatas": [{"v": SparseVector([1], [1.0])}]},
            "SparseVector",
        ),
    ],
)
def test_writes_chroma_would_refuse_are_refused_before_embedding(
    sparse_ef: ChromaSparseEmbeddingFunction, kwargs: dict[str, Any], fragment: str
) -> None:
    """Nothing is embedded or written for input that cannot be stored."""
    docs = open_docs(chromadb.EphemeralClient(), sparse_ef, name="strict")
    before = sparse_ef.usage.requests
    with pytest.raises(InvalidInputError, match=fragment):
        docs.add(**kwargs)
    assert sparse_ef.usage.requests == before
    assert docs.count() == 0


def test_update_may_remove_a_metadata_key_with_none(
    sparse_ef: ChromaSparseEmbeddingFunction,
) -> None:
    """None in update metadata is Chroma's way to delete a key, and stays allowed."""
    docs = open_docs(chromadb.EphemeralClient(), sparse_ef, name="unset")
    docs.add(ids=["a"], documents=["x"], metadatas=[{"k": 1, "j": 2}])
    docs.update(ids=["a"], metadatas=[{"k": None}])
    assert docs.get(ids=["a"])["metadatas"] == [{"j": 2}]


def test_handles_on_one_ephemeral_collection_see_each_others_writes(
    sparse_ef: ChromaSparseEmbeddingFunction,
) -> None:
    """A write through one handle is searchable through another (no watermark here)."""
    client = chromadb.EphemeralClient()
    first = open_docs(client, sparse_ef, name="shared")
    first.add(ids=[f"d{i}" for i in range(8)], documents=[f"plain text {i}" for i in range(8)])
    second = open_docs(client, sparse_ef, name="shared")
    assert second.search("plain", mode="sparse")  # both caches built

    first.update(ids=["d6"], documents=["quokka"])
    assert [hit.id for hit in second.search("quokka", mode="sparse")] == ["d6"]

    first.add(ids=["n1"], documents=["wombat"])
    first.delete(ids=["d1"])  # the count is unchanged
    assert [hit.id for hit in second.search("wombat", mode="sparse")] == ["n1"]


def test_search_object_with_keyword_arguments_is_refused(
    sparse_ef: ChromaSparseEmbeddingFunction,
) -> None:
    """Keyword arguments beside a Search would be silently ignored: they raise instead."""
    from chromadb.execution.expression import Knn, Search

    docs = open_docs(chromadb.EphemeralClient(), sparse_ef, name="kwargs")
    docs.add(ids=["a"], documents=["sparse vectors"], metadatas=[{"i": 1}])
    search = Search().rank(Knn(query="sparse", key="sparse_embedding")).limit(3)
    with pytest.raises(InvalidInputError, match="limit, mode, where"):
        docs.search(search, where={"i": 5}, mode="sparse", limit=1)
    assert [hit.id for hit in docs.search(search)] == ["a"]


def test_hidden_keys_cannot_be_selected(sparse_ef: ChromaSparseEmbeddingFunction) -> None:
    """Selecting the reserved keys by name returns nothing of them."""
    from chromadb.execution.expression import Knn, Search

    docs = open_docs(chromadb.EphemeralClient(), sparse_ef, name="hidden")
    docs.add(ids=["a"], documents=["sparse vectors"], metadatas=[{"i": 1}])
    search = (
        Search()
        .rank(Knn(query="sparse", key="sparse_embedding"))
        .select("sparse_embedding", "sparse_embedding__doc", "i")
    )
    (hit,) = docs.search(search)
    assert hit.metadata == {"i": 1}


def test_an_empty_id_filter_matches_nothing(sparse_ef: ChromaSparseEmbeddingFunction) -> None:
    """K.ID.is_in([]) returns no rows, as on Cloud, in every leg shape."""
    from chromadb.execution.expression import K, Knn, Search

    docs = open_docs(chromadb.EphemeralClient(), sparse_ef, name="noids")
    docs.add(ids=["a"], documents=["sparse vectors"])
    ranked = Search().where(K.ID.is_in([])).rank(Knn(query="sparse", key="sparse_embedding"))
    assert list(docs.search(ranked)) == []
    assert list(docs.search(Search().where(K.ID.is_in([])))) == []
    with pytest.raises(InvalidInputError, match="empty list of ids"):
        docs.delete(ids=[])
