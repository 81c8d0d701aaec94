"""The path Chroma Cloud runs: chromadb's own Collection computes sparse vectors client-side.

A real `chromadb.api.models.Collection.Collection` is built on a real Collection model
whose serialized schema holds our function in a `SparseVectorIndexConfig`. Only the calls
that would go to the Chroma server (`_add`, `_upsert`, `_update`, `_search`) are recorded
instead of sent; the embedding function talks HTTP to the local /embed_sparse server.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from chromadb.api.models.Collection import Collection
from chromadb.api.types import Schema, SparseVectorIndexConfig
from chromadb.base_types import SparseVector
from chromadb.execution.expression.operator import Key, Knn
from chromadb.execution.expression.plan import Search
from chromadb.types import Collection as CollectionModel

from chroma_sparse_ef import ChromaSparseEmbeddingFunction
from tests.integration.chroma_doubles import RecordingServer

SPARSE_KEY = "sparse_embedding"


class OfflineDense:
    """A tiny deterministic dense function so chromadb never downloads its default model."""

    def __call__(self, input: list[str]) -> list[list[float]]:
        return [[float(len(t)), float(t.count(" ")), 1.0] for t in input]

    @staticmethod
    def name() -> str:
        return "offline_dense_for_tests"

    def is_legacy(self) -> bool:
        return True


@pytest.fixture
def ef(embed_server_url: str) -> ChromaSparseEmbeddingFunction:
    return ChromaSparseEmbeddingFunction(base_url=embed_server_url, fetch_labels=True)


def recorded_collection(ef: ChromaSparseEmbeddingFunction) -> tuple[Collection, RecordingServer]:
    """A real Collection whose stored schema names `ef`; the server side is recorded."""
    schema = Schema().create_index(
        config=SparseVectorIndexConfig(source_key=Key.DOCUMENT, embedding_function=ef),
        key=SPARSE_KEY,
    )
    model = CollectionModel(
        id=uuid.uuid4(),
        name="client-side",
        configuration_json={},
        serialized_schema=schema.serialize_to_json(),
        metadata=None,
        dimension=None,
        tenant="default_tenant",
        database="default_database",
    )
    server = RecordingServer()
    return Collection(client=server, model=model, embedding_function=OfflineDense()), server  # type: ignore[arg-type]


@pytest.fixture
def collection(ef: ChromaSparseEmbeddingFunction) -> tuple[Collection, RecordingServer]:
    """A recorded Collection holding the labelled function."""
    return recorded_collection(ef)


DOCS = ["Sparse vectors keep exact terms.", "Dense vectors capture meaning.", "RRF fuses rankings."]


def test_schema_rebuilds_our_function_by_name(
    collection: tuple[Collection, RecordingServer],
) -> None:
    """The Collection's schema deserialises to a working ChromaSparseEmbeddingFunction."""
    coll, _ = collection
    config = coll.schema.keys[SPARSE_KEY].sparse_vector.sparse_vector_index.config  # type: ignore[union-attr]
    assert isinstance(config.embedding_function, ChromaSparseEmbeddingFunction)


@pytest.mark.parametrize("operation", ["add", "upsert"])
def test_writes_carry_the_functions_vectors_in_metadata(
    collection: tuple[Collection, RecordingServer],
    ef: ChromaSparseEmbeddingFunction,
    operation: str,
) -> None:
    """add/upsert put one SparseVector per document under the sparse key, as Cloud stores it."""
    coll, server = collection
    getattr(coll, operation)(
        ids=["a", "b", "c"], documents=DOCS, metadatas=[{"n": 1}, None, {"n": 3}]
    )
    ((name, sent),) = server.calls
    assert name == operation
    vectors = [m[SPARSE_KEY] for m in sent["metadatas"]]
    assert all(isinstance(v, SparseVector) for v in vectors)
    assert vectors == ef(DOCS)
    assert vectors[0].labels, "labels were asked for and must arrive"
    assert sent["metadatas"][0]["n"] == 1


def test_update_of_documents_recomputes_their_vectors(
    collection: tuple[Collection, RecordingServer], ef: ChromaSparseEmbeddingFunction
) -> None:
    """update with new documents sends their new sparse vectors."""
    coll, server = collection
    coll.update(ids=["a"], documents=["a brand new text"])
    ((name, sent),) = server.calls
    assert name == "update"
    assert sent["metadatas"][0][SPARSE_KEY] == ef(["a brand new text"])[0]


def test_knn_text_query_on_the_sparse_key_uses_embed_query(
    collection: tuple[Collection, RecordingServer], ef: ChromaSparseEmbeddingFunction
) -> None:
    """Knn(query="text", key=<sparse key>) is embedded client-side with our embed_query."""
    coll, server = collection
    coll.search(Search().rank(Knn(query="exact terms", key=SPARSE_KEY)).limit(5))
    ((name, sent),) = server.calls
    assert name == "search"
    (search,) = sent["searches"]
    knn = search.to_dict()["rank"]["$knn"]
    assert knn["key"] == SPARSE_KEY
    expected = ef.embed_query(["exact terms"])[0]
    assert knn["query"]["indices"] == expected.indices
    assert knn["query"]["values"] == expected.values


def test_knn_query_uses_the_query_model_not_the_document_model(
    embed_server_factory: Any, tmp_path: Any
) -> None:
    """With efficient-SPLADE, Chroma's client embeds a Knn text query with the -query model.

    The server serves the -query name from a (tiny) SPLADE model and the -doc name with
    BM25, so the two sides give different vectors and the test can tell them apart.
    """
    from chroma_sparse_ef.server import Bm25Backend, SpladeBackend
    from tests.unit.splade_fixture import write_model_dir

    query_model = "naver/efficient-splade-VI-BT-large-query"
    splade = SpladeBackend(write_model_dir(tmp_path / "splade"), models=(query_model,))
    server = embed_server_factory(backends=[splade, Bm25Backend()])
    ef = ChromaSparseEmbeddingFunction(
        base_url=server.url, model="naver/efficient-splade-VI-BT-large-doc"
    )
    coll, server_api = recorded_collection(ef)
    coll.search(Search().rank(Knn(query="sparse search", key=SPARSE_KEY)).limit(3))
    knn = server_api.calls[0][1]["searches"][0].to_dict()["rank"]["$knn"]
    as_query = ef.embed_query(["sparse search"])[0]
    as_document = ef(["sparse search"])[0]
    assert as_query.indices != as_document.indices
    assert knn["query"]["indices"] == as_query.indices
    assert knn["query"]["values"] == as_query.values
