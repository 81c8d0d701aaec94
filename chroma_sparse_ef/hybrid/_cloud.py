"""Hybrid search on Chroma Cloud (distributed Chroma): everything native.

The collection's ``Schema`` holds ``SparseVectorIndexConfig(source_key=K.DOCUMENT,
embedding_function=...)`` at the sparse key. chromadb's client then computes sparse vectors
itself on add/upsert/update (``CollectionCommon._apply_sparse_embeddings_to_metadatas``) and
embeds text queries of a ``Knn`` on that key (``_embed_knn_string_queries``); the server
keeps the sparse index. A search is one ``collection.search(Search)``.

Writes that fit one Chroma batch go straight through, so Chroma embeds both legs and sends
one request. A larger write goes through `_ingest` as on embedded Chroma: each chunk is
embedded (dense with the collection's function, sparse with the schema's, the same calls
Chroma makes) and then sent, so an embedding failure loses only the chunk in flight and the
progress bar counts records written.
"""

from __future__ import annotations

from typing import Any, Literal

from chromadb.api.types import Schema, SparseVectorIndexConfig
from chromadb.execution.expression import K, Search

from ._coherence import PendingRecord
from ._ingest import WriteSummary, embed_dense, embed_sparse, ingest, send
from ._native_search import native_search
from ._results import SearchHit, SearchResults
from ._search_args import TextSearch
from ._stored import strip_hidden
from ._writes import WriteBatch

__all__ = ["NativeBackend", "build_schema", "find_sparse_index"]


def build_schema(sparse_function: Any, sparse_key: str, *, bm25: bool = False) -> Schema:
    """The ``Schema`` of a hybrid collection on Chroma Cloud.

    Args:
        sparse_function: The sparse embedding function; Chroma stores its name and config.
        sparse_key: The metadata key of the sparse vectors.
        bm25: Rank the sparse leg with Cloud's BM25 IDF (``SparseVectorIndexConfig(bm25=True)``).

    Returns:
        A schema with a sparse vector index on ``sparse_key``, sourced from documents.
    """
    # K.DOCUMENT.name is "#document"; the config turns a Key into that same string. Without
    # IDF the flag is left unset, so such schemas stay exactly what they were before it.
    config = SparseVectorIndexConfig(
        source_key=K.DOCUMENT.name,
        embedding_function=sparse_function,
        bm25=True if bm25 else None,
    )
    return Schema().create_index(config=config, key=sparse_key)


def find_sparse_index(schema: Schema | None) -> tuple[str, SparseVectorIndexConfig] | None:
    """The key and config of the enabled sparse vector index in ``schema``, if any."""
    if schema is None:
        return None
    for key, value_types in schema.keys.items():
        sparse = value_types.sparse_vector
        if sparse is None or sparse.sparse_vector_index is None:
            continue
        if sparse.sparse_vector_index.enabled:
            return key, sparse.sparse_vector_index.config
    return None


class NativeBackend:
    """The Chroma Cloud side of `HybridCollection`."""

    kind: Literal["local", "native"] = "native"
    stores_sparse_vectors = True

    def __init__(
        self,
        collection: Any,
        sparse_function: Any,
        sparse_key: str,
        *,
        max_batch_size: int,
        bm25: bool = False,
    ) -> None:
        self.collection = collection
        self.sparse_function = sparse_function
        self.sparse_key = sparse_key
        #: Cloud's index applies IDF itself (the schema's ``bm25``); recorded to report it.
        self.bm25 = bm25
        self.reserved: tuple[str, ...] = (sparse_key,)
        self._max_batch = max_batch_size

    def write(self, op: str, batch: WriteBatch, *, progress: bool) -> WriteSummary:
        """``add``, ``upsert`` or ``update``; Chroma computes the sparse vectors.

        A write that fits one Chroma batch goes straight through (Chroma embeds both legs
        in one request); a larger one is embedded and sent chunk by chunk (`_ingest`).
        """
        total = len(batch.ids)
        if total <= self._max_batch:
            send(
                self.collection,
                op,
                batch.ids,
                embeddings=batch.embeddings,
                metadatas=batch.metadatas,
                documents=batch.documents,
            )
            embedded = len(batch.documents_to_embed())
            return WriteSummary(written=total, embedded=embedded)
        return ingest(op, batch, self, chunk_size=self._max_batch, progress=progress)

    def write_chunk(self, op: str, part: WriteBatch) -> WriteSummary:
        """Embed one chunk as Chroma would (dense, then sparse) and send it.

        Raises:
            EmbeddingError: A function failed; nothing of this chunk was written.
        """
        with_docs = part.documents_to_embed()
        texts = [doc for _, doc in with_docs]
        embeddings: Any = part.embeddings
        if embeddings is None and part.documents is not None:
            embeddings = embed_dense(self.collection, texts)
        vectors = embed_sparse(self.sparse_function, texts)
        metadatas: list[dict[str, Any] | None] = list(part.metadatas or [None] * len(part.ids))
        for (position, _), vector in zip(with_docs, vectors, strict=True):
            # A SparseVector already at the key: Chroma sends it as is, embeds nothing.
            metadatas[position] = {**(metadatas[position] or {}), self.sparse_key: vector}
        send(
            self.collection,
            op,
            part.ids,
            embeddings=embeddings,
            metadatas=metadatas,
            documents=part.documents,
        )
        return WriteSummary(written=len(part.ids), embedded=len(texts))

    def refresh(self) -> None:
        """Nothing is cached: Chroma Cloud's index is always current."""

    def pending(self) -> list[PendingRecord]:
        """None: on Chroma Cloud a record is embedded when written, or not written."""
        return []

    def delete(self, ids: list[str] | None, where: Any, where_document: Any) -> None:
        """Delete by ids and/or filters, as ``collection.delete``."""
        self.collection.delete(ids=ids, where=where, where_document=where_document)

    def search(self, query: TextSearch | Search) -> SearchResults:
        """Run one native ``Search``; per-leg ranks are not reported by Chroma Cloud."""
        search = native_search(query) if isinstance(query, TextSearch) else query
        result = self.collection.search(search)
        rows = result.rows()[0] if result.get("ids") else []
        hits = tuple(
            SearchHit(
                id=row["id"],
                score=row.get("score"),
                document=row.get("document"),
                metadata=strip_hidden(row.get("metadata"), self.reserved),
                embedding=None if row.get("embedding") is None else list(row["embedding"]),
            )
            for row in rows
        )
        return SearchResults(hits=hits, backend="native")

    def close(self) -> None:
        """Nothing to release."""
