"""Hybrid search (dense + sparse, fused with RRF) on Chroma Cloud and embedded Chroma.

`HybridCollection` is the entry point::

    import chromadb
    from chroma_sparse_ef import ChromaSparseEmbeddingFunction
    from chroma_sparse_ef.hybrid import HybridCollection

    client = chromadb.PersistentClient("./db")          # or chromadb.CloudClient(...)
    docs = HybridCollection.get_or_create(
        client, "docs", sparse_embedding_function=ChromaSparseEmbeddingFunction()
    )
    docs.add(ids=["a", "b"], documents=["...", "..."])
    for hit in docs.search("what is RRF?", limit=5):
        print(hit.id, hit.score, hit.dense_rank, hit.sparse_rank, hit.matched_labels)
"""

from __future__ import annotations

from .._exceptions import (
    CorruptSparseVectorError,
    HybridLayoutError,
    HybridSyncError,
    UnsupportedSearchError,
)
from ._coherence import PendingRecord
from ._collection import DEFAULT_SPARSE_KEY, Backend, HybridCollection
from ._ingest import WriteSummary
from ._native_search import build_native_search
from ._plan import plan_from_search
from ._results import SearchHit, SearchResults, TermMatch

__all__ = [
    "DEFAULT_SPARSE_KEY",
    "Backend",
    "CorruptSparseVectorError",
    "HybridCollection",
    "HybridLayoutError",
    "HybridSyncError",
    "PendingRecord",
    "SearchHit",
    "SearchResults",
    "TermMatch",
    "UnsupportedSearchError",
    "WriteSummary",
    "build_native_search",
    "plan_from_search",
]
