"""Hybrid search on Chroma Cloud (distributed Chroma): everything native.

The collection's ``Schema`` holds ``SparseVectorIndexConfig(source_key=K.DOCUMENT,
embedding_function=...)`` at the sparse key. chromadb's client then computes sparse vectors
itself on add/upsert/update (``CollectionCommon._apply_sparse_embeddings_to_metadatas``) and
embeds text queries of a ``Knn`` on that key (``_embed_knn_string_queries``); the server
keeps the sparse index. A search is one ``collection.search(Search)``.

Writes that fit one Chroma batch go straight through, so Chroma embeds both legs and sends
one request. A larger write is embedded first (dense with the collection's function, sparse
with the schema's, the same calls Chroma makes) and then sent in batches: an embedding
failure then writes nothing, and the progress bar can move.
"""

from __future__ import annotations

from typing import Any

from chromadb.api.types import Schema, SparseVectorIndexConfig
from chromadb.execution.expression import K, Search

from ._results import SearchHit, SearchResults
from ._stored import strip_hidden
from ._writes import WriteBatch, as_sparse_vectors, chunks, embed_in_chunks, progress_bar

__all__ = ["NativeBackend", "build_schema", "find_sparse_index"]


def build_schema(sparse_function: Any, sparse_key: str) -> Schema:
    """The ``Schema`` of a hybrid collection on Chroma Cloud.

    Args:
        sparse_function: The sparse embedding function; Chroma stores its name and config.
        sparse_key: The metadata key of the sparse vectors.

    Returns:
        A schema with a sparse vector index on ``sparse_key``, sourced from documents.
    """
    # K.DOCUMENT.name is "#document"; the config turns a Key into that same string.
    config = SparseVectorIndexConfig(source_key=K.DOCUMENT.name, embedding_function=sparse_function)
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

    kind = "native"

    def __init__(
        self, collection: Any, sparse_function: Any, sparse_key: str, *, max_batch_size: int
    ) -> None:
        self.collection = collection
        self.sparse_function = sparse_function
        self.sparse_key = sparse_key
        self.reserved: tuple[str, ...] = (sparse_key,)
        self._max_batch = max_batch_size

    def write(self, op: str, batch: WriteBatch, *, progress: bool) -> None:
        """``add``, ``upsert`` or ``update``; Chroma computes the sparse vectors."""
        send = getattr(self.collection, op)
        total = len(batch.ids)
        if total <= self._max_batch:
            send(
                ids=batch.ids,
                embeddings=batch.embeddings,
                metadatas=batch.metadatas,
                documents=batch.documents,
            )
            return
        embeddings: Any = batch.embeddings
        if embeddings is None and batch.documents is not None:
            texts = [doc for doc in batch.documents if doc is not None]
            embeddings = embed_in_chunks(
                lambda part: self.collection._embed(input=part, is_query=False),
                texts,
                progress=progress,
                desc="dense embedding",
            )
        with_docs = batch.documents_to_embed()
        vectors = as_sparse_vectors(
            embed_in_chunks(
                self.sparse_function,
                [doc for _, doc in with_docs],
                progress=progress,
                desc="sparse embedding",
            ),
            "documents",
        )
        metadatas: list[dict[str, Any] | None] = list(batch.metadatas or [None] * total)
        for (position, _), vector in zip(with_docs, vectors, strict=True):
            # A SparseVector already at the key: Chroma sends it as is, embeds nothing.
            metadatas[position] = {**(metadatas[position] or {}), self.sparse_key: vector}
        with progress_bar(progress, total, f"{op} to Chroma", unit="record") as bar:
            for start, end in chunks(total, self._max_batch):
                send(
                    ids=batch.ids[start:end],
                    embeddings=None if embeddings is None else embeddings[start:end],
                    metadatas=metadatas[start:end] if any(metadatas[start:end]) else None,
                    documents=None if batch.documents is None else batch.documents[start:end],
                )
                bar.update(end - start)

    def delete(self, ids: list[str] | None, where: Any, where_document: Any) -> None:
        """Delete by ids and/or filters, as ``collection.delete``."""
        self.collection.delete(ids=ids, where=where, where_document=where_document)

    def search(self, search: Search) -> SearchResults:
        """Run one native ``Search``; per-leg ranks are not reported by Chroma Cloud."""
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
