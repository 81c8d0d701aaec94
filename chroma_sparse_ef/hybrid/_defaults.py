"""Defaults of hybrid search, in one place: each says where its number comes from.

Both query builders (`_native_search` for Chroma Cloud, `_plan` for embedded Chroma),
`_fusion` and `HybridCollection.search` read them from here.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_CANDIDATE_LIMIT",
    "DEFAULT_KNN_LIMIT",
    "DEFAULT_RRF_K",
    "DEFAULT_SEARCH_LIMIT",
    "DEFAULT_SELECT",
    "EMBEDDING_KEY",
]

#: Chroma's key for the dense embedding (``chromadb.api.types.EMBEDDING_KEY``).
EMBEDDING_KEY = "#embedding"
#: ``Knn``'s default ``limit`` in chromadb (operator.py, and ``Rank.from_dict``).
DEFAULT_KNN_LIMIT = 16
#: Chroma's ``Rrf`` default (``Rrf.k = 60`` in chromadb's operator.py; "standard in
#: literature"), also the k of Chroma's own hybrid route (``rust/foundation-api``).
DEFAULT_RRF_K = 60
#: Candidates per leg in hybrid search. Chroma's Knn default of 16 is too few to fuse: the
#: hybrid-search docs use 100 to 300 in their examples; 100 is their "Document Selection"
#: example and what Chroma's own hybrid route uses, and an exact local sparse scan of 100
#: is cheap.
DEFAULT_CANDIDATE_LIMIT = 100
#: Results returned when the caller names no limit.
DEFAULT_SEARCH_LIMIT = 10
#: What hybrid search returns by default: the fields a RAG pipeline reads.
DEFAULT_SELECT: tuple[str, ...] = ("#document", "#metadata", "#score")
