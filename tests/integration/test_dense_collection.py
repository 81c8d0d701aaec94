"""HashingEmbeddingFunction in a real embedded Chroma collection, persisted and reopened."""

from __future__ import annotations

from pathlib import Path

import chromadb

from chroma_sparse_ef._hashing import HashingEmbeddingFunction


def test_a_collection_reopened_by_name_rebuilds_the_hashing_function(tmp_path: Path) -> None:
    """The stored config names the function; a new client rebuilds it and queries work."""
    client = chromadb.PersistentClient(path=str(tmp_path))
    collection = client.create_collection(
        "docs", embedding_function=HashingEmbeddingFunction(dimensions=128)
    )
    collection.add(
        ids=["json", "time", "socket"],
        documents=[
            "Deserialize a JSON document to a Python object.",
            "Return the current time in seconds since the epoch.",
            "Create a new socket using the given address family.",
        ],
    )
    del client, collection

    reopened = chromadb.PersistentClient(path=str(tmp_path)).get_collection("docs")
    function = reopened.configuration["embedding_function"]
    assert isinstance(function, HashingEmbeddingFunction)
    assert function.dimensions == 128
    assert reopened.configuration["hnsw"]["space"] == "cosine"
    # No function passed: the query is embedded by the rebuilt one (Chroma's default
    # would need a model download, impossible here).
    result = reopened.query(query_texts=["parse JSON into objects"], n_results=1)
    assert result["ids"] == [["json"]]
