"""On Chroma Cloud, ``bm25`` is the schema's ``SparseVectorIndexConfig(bm25=True)``.

Chroma Cloud is unreachable from CI: the collections here are chromadb's real
``Collection`` objects with a real schema, behind the recording client of
`test_hybrid_cloud` (only the server call is intercepted).
"""

from __future__ import annotations

from typing import Any

import pytest
from chromadb.utils.embedding_functions import ChromaBm25EmbeddingFunction

from chroma_sparse_ef import ChromaSparseEmbeddingFunction, ConfigurationError
from chroma_sparse_ef.hybrid import HybridCollection
from chroma_sparse_ef.hybrid._cloud import build_schema
from tests.integration.chroma_doubles import HashEmbedding
from tests.integration.test_hybrid_cloud import FakeCloudClient

pytestmark = pytest.mark.filterwarnings(
    "ignore:The EmbeddingFunction class does not implement name:DeprecationWarning"
)


def sparse_index_config(schema: Any, key: str = "sparse_embedding") -> dict[str, Any]:
    serialized = schema.serialize_to_json()
    config: dict[str, Any] = serialized["keys"][key]["sparse_vector"]["sparse_vector_index"][
        "config"
    ]
    return config


def test_schema_sets_bm25_only_when_asked() -> None:
    """bm25=True sets the index's flag; without it the schema is what it always was."""
    ef = ChromaBm25EmbeddingFunction()
    assert sparse_index_config(build_schema(ef, "sparse_embedding", bm25=True))["bm25"] is True
    assert sparse_index_config(build_schema(ef, "sparse_embedding")).get("bm25") is None


def test_chromas_bm25_function_gets_a_bm25_index_on_cloud_by_default() -> None:
    """bm25=None with ChromaBm25EmbeddingFunction creates the Cloud index with bm25=True."""
    cloud = FakeCloudClient()
    docs = HybridCollection.get_or_create(
        cloud,
        "bm25",
        sparse_embedding_function=ChromaBm25EmbeddingFunction(),
        embedding_function=HashEmbedding(),
    )
    assert docs.backend == "native"
    assert docs.bm25 is True
    schema = cloud.models["bm25"].serialized_schema
    index = schema["keys"]["sparse_embedding"]["sparse_vector"]["sparse_vector_index"]
    assert index["config"]["bm25"] is True


def test_a_learned_sparse_model_gets_no_idf_unless_forced(embed_server_url: str) -> None:
    """SPLADE-style functions weight terms themselves: bm25 stays off unless bm25=True."""
    cloud = FakeCloudClient()
    with ChromaSparseEmbeddingFunction(base_url=embed_server_url) as ef:
        plain = HybridCollection.get_or_create(
            cloud, "splade", sparse_embedding_function=ef, embedding_function=HashEmbedding()
        )
        forced = HybridCollection.get_or_create(
            cloud,
            "forced",
            sparse_embedding_function=ef,
            embedding_function=HashEmbedding(),
            bm25=True,
        )
    assert plain.bm25 is False
    assert forced.bm25 is True


def test_reopening_a_cloud_collection_restores_bm25_and_refuses_another_value() -> None:
    """The flag comes back from the stored schema; a different explicit value is refused."""
    cloud = FakeCloudClient()
    open_ = HybridCollection.get_or_create
    open_(cloud, "c", sparse_embedding_function=ChromaBm25EmbeddingFunction(), bm25=True)
    again = open_(cloud, "c", sparse_embedding_function=ChromaBm25EmbeddingFunction())
    assert again.bm25 is True
    with pytest.raises(ConfigurationError, match="bm25=True"):
        open_(cloud, "c", sparse_embedding_function=ChromaBm25EmbeddingFunction(), bm25=False)


@pytest.mark.parametrize("bad", ["yes", 1, 0.0])
def test_bm25_must_be_a_bool_or_none(bad: object) -> None:
    """A non-boolean bm25 is a ConfigurationError before anything is created."""
    cloud = FakeCloudClient()
    with pytest.raises(ConfigurationError, match="bm25"):
        HybridCollection.get_or_create(
            cloud,
            "x",
            sparse_embedding_function=ChromaBm25EmbeddingFunction(),
            bm25=bad,  # type: ignore[arg-type]
        )
    assert cloud.models == {}
