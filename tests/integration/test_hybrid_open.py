"""Opening and reading are named apart: ``HybridCollection.open`` opens, ``.get`` reads."""

from __future__ import annotations

from typing import Any

import chromadb
import pytest
from chromadb.utils.embedding_functions import ChromaBm25EmbeddingFunction

from chroma_sparse_ef.hybrid import HybridCollection
from tests.integration.chroma_doubles import HashEmbedding

pytestmark = pytest.mark.filterwarnings(
    "ignore:The EmbeddingFunction class does not implement name:DeprecationWarning"
)


@pytest.fixture
def client() -> Any:
    """An EphemeralClient holding one hybrid collection named 'docs' with two records."""
    client = chromadb.EphemeralClient()
    name = "docs"
    if name in [c.name for c in client.list_collections()]:
        client.delete_collection(name)
    docs = HybridCollection.get_or_create(
        client,
        name,
        sparse_embedding_function=ChromaBm25EmbeddingFunction(),
        embedding_function=HashEmbedding(),
    )
    docs.add(ids=["a", "b"], documents=["alpha beta", "gamma delta"], metadatas=[{"n": 1}, None])
    return client


def test_open_reopens_an_existing_collection_without_a_warning(
    client: Any, recwarn: pytest.WarningsRecorder
) -> None:
    """HybridCollection.open is the one way to open, and it warns about nothing."""
    docs = HybridCollection.open(client, "docs", embedding_function=HashEmbedding())
    assert docs.count() == 2
    assert not [w for w in recwarn if "HybridCollection" in str(w.message)]


def test_get_on_an_instance_reads_records(client: Any) -> None:
    """collection.get(...) reads records, as Chroma's, with hidden keys removed."""
    docs = HybridCollection.open(client, "docs", embedding_function=HashEmbedding())
    got = docs.get(ids=["a"])
    assert got["ids"] == ["a"]
    assert got["metadatas"] == [{"n": 1}]


def test_get_on_the_class_still_opens_with_a_deprecation_warning(client: Any) -> None:
    """The old HybridCollection.get(client, name) keeps working, and says to use open."""
    with pytest.warns(DeprecationWarning, match=r"HybridCollection\.open"):
        docs = HybridCollection.get(client, "docs", embedding_function=HashEmbedding())
    assert isinstance(docs, HybridCollection)
    assert docs.count() == 2
