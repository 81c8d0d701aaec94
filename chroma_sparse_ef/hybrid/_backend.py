"""The one interface both hybrid backends implement, so `HybridCollection` never asks which.

- `_local.LocalBackend`: embedded Chroma (``EphemeralClient``, ``PersistentClient``,
  single-node ``HttpClient``): sparse vectors stored in record metadata, our exact index
  as a cache (`_coherence`), searches run by `_local_search`.
- `_cloud.NativeBackend`: Chroma Cloud: a sparse index in the collection's schema, one
  native ``Search`` per query.

Both write through `_ingest` (bounded chunks, one progress bar) and take the same query
types: a checked text query (`_search_args.TextSearch`), which each backend turns into its
own form (`_native_search.native_search` on Cloud, `_plan.local_plan` locally, never by
parsing one back into the other), or a chromadb ``Search`` a user built.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from chromadb.execution.expression import Search

from ._coherence import PendingRecord
from ._ingest import WriteSummary
from ._results import SearchResults
from ._search_args import TextSearch
from ._writes import WriteBatch

__all__ = ["HybridBackend"]


class HybridBackend(Protocol):
    """What `HybridCollection` needs of a backend.

    Attributes:
        kind: ``"local"`` or ``"native"``.
        collection: The chromadb ``Collection``.
        sparse_function: The sparse embedding function in use.
        sparse_key: The metadata key of the sparse vectors.
        reserved: Record-metadata keys users may not write and never see.
        stores_sparse_vectors: Whether user metadata may hold ``SparseVector`` values
            (Chroma Cloud can store them; embedded Chroma cannot).
        bm25: Whether the sparse leg ranks with Chroma Cloud's BM25 IDF.
    """

    kind: Literal["local", "native"]
    collection: Any
    sparse_function: Any
    sparse_key: str
    reserved: tuple[str, ...]
    stores_sparse_vectors: bool
    bm25: bool

    def write(self, op: str, batch: WriteBatch, *, progress: bool) -> WriteSummary:
        """``add``, ``upsert`` or ``update`` with Chroma's semantics, in bounded chunks."""
        ...

    def delete(self, ids: list[str] | None, where: Any, where_document: Any) -> None:
        """Delete by ids and/or filters, as ``collection.delete``."""
        ...

    def search(self, query: TextSearch | Search) -> SearchResults:
        """Run a checked text query, or a ``Search`` a user built."""
        ...

    def refresh(self) -> None:
        """Bring any cache up to the collection now, retrying pending records."""
        ...

    def pending(self) -> list[PendingRecord]:
        """Records whose document could not be embedded, so the sparse leg misses them."""
        ...

    def close(self) -> None:
        """Release what the backend holds (a read-only sqlite connection)."""
        ...
