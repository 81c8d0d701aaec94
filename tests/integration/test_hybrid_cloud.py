"""HybridCollection's native (Chroma Cloud) backend, with only the server call intercepted.

Chroma Cloud is unreachable from CI. The collection here is chromadb's real ``Collection``
with a real model and schema; its ``_client`` (the ServerAPI that would send HTTP) is a
recorder. So chromadb's own client-side embedding runs for real: the dense function, and
the sparse function from the schema against the local /embed_sparse server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from chromadb.api.models.Collection import Collection
from chromadb.api.types import SparseVector
from chromadb.config import Settings
from chromadb.execution.expression import K, Knn, Search
from chromadb.types import Collection as CollectionModel

from chroma_sparse_ef import ChromaSparseEmbeddingFunction, InvalidInputError
from chroma_sparse_ef.hybrid import HybridCollection, HybridLayoutError
from chroma_sparse_ef.hybrid._cloud import build_schema
from tests.integration.chroma_doubles import HashEmbedding, RecordingServer

pytestmark = pytest.mark.filterwarnings(
    "ignore:The EmbeddingFunction class does not implement name:DeprecationWarning"
)


class FakeCloudClient:
    """The client-level calls HybridCollection makes, creating real Collection objects."""

    def __init__(self, max_batch: int = 100) -> None:
        self.server = RecordingServer()
        self.models: dict[str, CollectionModel] = {}
        self.max_batch = max_batch

    def get_settings(self) -> Settings:
        return Settings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host="api.trychroma.com"
        )

    def get_max_batch_size(self) -> int:
        return self.max_batch

    def get_collection(self, name: str, embedding_function: Any = None) -> Collection:
        if name not in self.models:
            from chromadb.errors import NotFoundError

            raise NotFoundError(f"Collection {name} does not exist")
        return Collection(
            client=self.server,  # type: ignore[arg-type]
            model=self.models[name],
            embedding_function=embedding_function,
        )

    def get_or_create_collection(
        self,
        name: str,
        schema: Any = None,
        metadata: Any = None,
        embedding_function: Any = None,
    ) -> Collection:
        if name not in self.models:
            self.models[name] = CollectionModel(
                id=uuid.uuid4(),
                name=name,
                configuration_json={},
                serialized_schema=None if schema is None else schema.serialize_to_json(),
                metadata=metadata,
                dimension=None,
                tenant="t",
                database="d",
                version=0,
                log_position=0,
            )
        return self.get_collection(name, embedding_function)


@pytest.fixture
def sparse_ef(embed_server_url: str) -> Iterator[ChromaSparseEmbeddingFunction]:
    """A sparse function on the local server."""
    with ChromaSparseEmbeddingFunction(base_url=embed_server_url) as ef:
        yield ef


@pytest.fixture
def cloud() -> FakeCloudClient:
    """A fake Cloud client whose collections are real chromadb Collections."""
    return FakeCloudClient()


@pytest.fixture
def docs(cloud: FakeCloudClient, sparse_ef: Any) -> HybridCollection:
    """A native hybrid collection."""
    return HybridCollection.get_or_create(
        cloud, "docs", sparse_embedding_function=sparse_ef, embedding_function=HashEmbedding()
    )


def test_schema_holds_sparse_index_with_function_by_name(sparse_ef: Any) -> None:
    """The schema indexes sparse vectors at the key, sourced from documents, function by name."""
    schema = build_schema(sparse_ef, "sparse_embedding").serialize_to_json()
    index = schema["keys"]["sparse_embedding"]["sparse_vector"]["sparse_vector_index"]
    assert index["enabled"] is True
    assert index["config"]["source_key"] == "#document"
    assert index["config"]["embedding_function"]["name"] == "chroma_sparse_ef"
    assert index["config"]["embedding_function"]["type"] == "known"


def test_cloud_client_gets_native_backend(docs: HybridCollection) -> None:
    """A Cloud host means the native backend and a schema-created collection."""
    assert docs.backend == "native"
    assert docs.sparse_key == "sparse_embedding"


def test_add_sends_sparse_vectors_computed_client_side_by_chroma(
    docs: HybridCollection, cloud: FakeCloudClient
) -> None:
    """chromadb computes the SparseVector from the schema's function and sends it in metadata."""
    docs.add(
        ids=["a", "b"], documents=["error code E1234", "pasta water"], metadatas=[{"t": 1}, None]
    )
    ((name, call),) = cloud.server.calls
    assert name == "add"
    metas = call["metadatas"]
    assert isinstance(metas[0]["sparse_embedding"], SparseVector)
    assert metas[0]["t"] == 1
    assert isinstance(metas[1]["sparse_embedding"], SparseVector)
    assert len(call["embeddings"][0]) == 64


def test_large_native_write_is_embedded_first_then_chunked(
    sparse_ef: Any,
) -> None:
    """A write past the max batch size is embedded up front and sent in batches."""
    cloud = FakeCloudClient(max_batch=3)
    docs = HybridCollection.get_or_create(
        cloud, "big", sparse_embedding_function=sparse_ef, embedding_function=HashEmbedding()
    )
    docs.upsert(ids=[f"r{i}" for i in range(7)], documents=[f"text {i}" for i in range(7)])
    sizes = [len(call["ids"]) for name, call in cloud.server.calls if name == "upsert"]
    assert sizes == [3, 3, 1]
    first = cloud.server.calls[0][1]
    assert all(isinstance(m["sparse_embedding"], SparseVector) for m in first["metadatas"])


def test_hybrid_search_sends_one_rrf_search_with_both_queries_embedded(
    docs: HybridCollection, cloud: FakeCloudClient
) -> None:
    """search() sends one Search: Rrf over a dense Knn (vector) and a sparse Knn (SparseVector)."""
    cloud.server.search_rows = [
        {"id": "a", "document": "doc", "metadata": {"t": 1, "sparse_embedding": {}}, "score": -0.03}
    ]
    results = docs.search("error code", limit=5, where={"t": 1})
    assert results.backend == "native"
    assert results[0].metadata == {"t": 1}  # the sparse vector is hidden
    ((_name, call),) = cloud.server.calls
    payload = call["searches"][0].to_dict()
    assert payload["limit"] == {"limit": 5, "offset": 0}
    assert payload["filter"] == {"t": {"$eq": 1}}
    terms = payload["rank"]["$mul"][1]["$sum"]
    knns = [term["$div"]["right"]["$sum"][1]["$knn"] for term in terms]
    assert knns[0]["key"] == "#embedding"
    assert len(knns[0]["query"]) == 64
    assert knns[1]["key"] == "sparse_embedding"
    assert set(knns[1]["query"]) >= {"indices", "values"}
    assert all(knn["return_rank"] and knn["limit"] == 100 for knn in knns)


def test_search_object_is_sent_as_is(docs: HybridCollection, cloud: FakeCloudClient) -> None:
    """A Search outside the local subset is fine natively: Cloud evaluates it."""
    search = Search().rank(Knn(query="x") * 0.5).limit(3).select(K.DOCUMENT)
    docs.search(search)
    ((_, call),) = cloud.server.calls
    assert "$mul" in call["searches"][0].to_dict()["rank"]


def test_get_reopens_native_collection_by_schema(
    cloud: FakeCloudClient, docs: HybridCollection
) -> None:
    """HybridCollection.get finds the sparse index in the schema and its function by name."""
    reopened = HybridCollection.open(cloud, "docs", embedding_function=HashEmbedding())
    assert reopened.backend == "native"
    assert isinstance(reopened.sparse_embedding_function, ChromaSparseEmbeddingFunction)


def test_native_reserved_key_is_refused(docs: HybridCollection, cloud: FakeCloudClient) -> None:
    """User metadata may not set the sparse key on Cloud either; nothing is sent."""
    with pytest.raises(InvalidInputError):
        docs.add(ids=["a"], documents=["x"], metadatas=[{"sparse_embedding": "y"}])
    assert cloud.server.calls == []


def test_forcing_native_on_a_plain_collection_is_refused(cloud: FakeCloudClient) -> None:
    """A collection without a sparse index cannot be opened as native."""
    cloud.get_or_create_collection("plain")
    with pytest.raises(HybridLayoutError):
        HybridCollection.open(cloud, "plain", embedding_function=HashEmbedding(), backend="native")
