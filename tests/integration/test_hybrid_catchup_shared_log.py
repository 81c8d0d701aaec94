"""Catching up from Chroma's log when other collections share the same sqlite file.

Chroma purges each collection's log separately. Another collection that still keeps old
rows must not make this collection's purged history look whole: the cache would then skip
the changes whose rows are gone (a document changed by other code would keep its old
sparse vector, in every later process too, through the snapshot).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.utils.embedding_functions import ChromaBm25EmbeddingFunction

from chroma_sparse_ef.hybrid import HybridCollection
from tests.integration.chroma_doubles import HashEmbedding

pytestmark = pytest.mark.filterwarnings(
    "ignore:The EmbeddingFunction class does not implement name:DeprecationWarning"
)


def test_changes_behind_a_purged_log_are_seen_when_another_collection_keeps_old_rows(
    tmp_path: Path,
) -> None:
    """Another collection holds the oldest log row; this one's rows are purged past the
    cache's watermark; a document changed by other code is still found by its new words."""
    client: Any = chromadb.PersistentClient(str(tmp_path))
    other = client.create_collection("other", embedding_function=HashEmbedding())
    other.add(ids=["o1"], documents=["an older row kept in the log"])
    docs = HybridCollection.get_or_create(
        client,
        "docs",
        sparse_embedding_function=ChromaBm25EmbeddingFunction(),
        embedding_function=HashEmbedding(),
    )
    docs.add(ids=[f"f{i}" for i in range(30)], documents=[f"filler text {i}" for i in range(30)])
    docs.add(ids=["x"], documents=["apples and pears"])
    assert docs.search("zebra", mode="sparse").ids == []  # the cache is built

    raw = client.get_collection("docs", embedding_function=HashEmbedding())
    raw.update(ids=["x"], documents=["zebra zebra zebra"])  # other code changes x
    # Enough writes for Chroma to persist its vector index and purge this collection's log.
    for i in range(12):
        raw.add(
            ids=[f"g{i}_{j}" for j in range(100)], documents=[f"more {i} {j}" for j in range(100)]
        )

    assert docs.search("zebra", mode="sparse").ids == ["x"]
    assert docs.count() == 31 + 1200
