"""Hybrid search on embedded Chroma: Chroma is the truth, our sparse index a cache.

Storage. Each record's encoded sparse vector and the hash of the document it came from
live in its metadata (`_stored`). On a PersistentClient the index is also saved to a
snapshot file beside Chroma's data (`_persist`), so a new process reads it back and catches
up on the writes since instead of rebuilding; otherwise, after a restart the index is
rebuilt from the collection, with no re-embedding.

`LocalBackend` puts three parts behind the `HybridBackend` interface:

- `_coherence.CacheCoherence`: what the cache knows and how it catches up with writes by
  other code (read that module for what is detected);
- writes: `_ingest` cuts a write into chunks; `LocalBackend.write_chunk` (below) decides,
  per chunk, what needs embedding and what Chroma already holds from the same document;
- `_local_search.LocalSearch`: runs a search plan against the cache and Chroma.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from chromadb.execution.expression import Search

from .._chroma_compat import system_identity
from .._exceptions import HybridSyncError
from ._codec import encode_sparse_vector
from ._coherence import CacheCoherence, PendingRecord, fingerprint, is_embedded
from ._index import SparseIndex
from ._ingest import WriteSummary, embed_dense, embed_sparse, ingest, send
from ._kernel import warm_up
from ._local_search import LocalSearch
from ._persist import SnapshotStore, vector_hash
from ._plan import local_plan, plan_from_search
from ._results import SearchResults
from ._search_args import TextSearch
from ._stored import CONFIG_METADATA_KEY, document_hash, hidden_keys
from ._watch import SqliteWatermark
from ._writes import WriteBatch, chunks, merge_metadata

__all__ = ["HybridSyncError", "LocalBackend", "shared_backend"]


class LocalBackend:
    """The embedded-Chroma side of `HybridCollection`. Thread-safe."""

    kind: Literal["local", "native"] = "local"
    #: Embedded Chroma refuses a SparseVector in metadata (see PRODUCT.md).
    stores_sparse_vectors = False

    def __init__(
        self,
        collection: Any,
        sparse_function: Any,
        sparse_key: str,
        *,
        max_batch_size: int,
        watermark: SqliteWatermark | None,
        bm25: bool = False,
    ) -> None:
        self.collection = collection
        self.sparse_function = sparse_function
        self.sparse_key = sparse_key
        self.bm25 = bm25
        self.reserved: tuple[str, ...] = hidden_keys(sparse_key)
        self._max_batch = max_batch_size
        store = None
        if watermark is not None and watermark.directory is not None:
            store = SnapshotStore.for_collection(
                watermark.directory,
                str(collection.id),
                stored_layout=(collection.metadata or {}).get(CONFIG_METADATA_KEY),
                sparse_key=sparse_key,
                bm25=bm25,
            )
        self._cache = CacheCoherence(
            collection,
            sparse_function,
            sparse_key,
            max_batch_size=max_batch_size,
            watermark=watermark,
            store=store,
        )
        self._search = LocalSearch(self._cache, self.reserved, bm25=bm25)
        # Compile (or load) the scoring kernel while the index is being read.
        warm_up()

    @property
    def index(self) -> SparseIndex | None:
        """The sparse index, or ``None`` before the first search."""
        return self._cache.index

    @property
    def cache(self) -> CacheCoherence:
        """The sparse cache and what it knows (for tests and benchmarks)."""
        return self._cache

    # ------------------------------------------------------------------ interface

    def search(self, query: TextSearch | Search) -> SearchResults:
        """Run a text query's plan, or a ``Search`` in the subset `plan_from_search` accepts."""
        if isinstance(query, TextSearch):
            return self._search.search(local_plan(query))
        return self._search.search(plan_from_search(query, sparse_key=self.sparse_key))

    def refresh(self) -> None:
        """Rebuild the cache from the collection now, retrying pending records."""
        self._cache.load()

    def pending(self) -> list[PendingRecord]:
        """Records set aside because their document could not be embedded."""
        return self._cache.pending()

    def close(self) -> None:
        """Save the sparse index snapshot if it changed; release the sqlite connection."""
        self._cache.close()

    def write(self, op: str, batch: WriteBatch, *, progress: bool) -> WriteSummary:
        """``add``, ``upsert`` or ``update`` with Chroma's semantics, chunk by chunk.

        Each chunk is embedded and then written before the next is embedded (`_ingest`).
        A record whose stored vector came from the same document is not embedded again.
        """
        return ingest(op, batch, self, chunk_size=self._max_batch, progress=progress)

    def write_chunk(self, op: str, part: WriteBatch) -> WriteSummary:
        """One chunk: skip what Chroma holds already, embed the rest, write, update the cache.

        Raises:
            EmbeddingError: A function failed; nothing of this chunk was written.
        """
        cache = self._cache
        with cache.lock:
            before = cache.mark()
            existing = self._existing(part.ids, with_content=op != "add")
            summary = WriteSummary()
            if op == "add":
                # Chroma ignores an add of an existing id; so do we, without embedding it.
                keep = [i for i, rid in enumerate(part.ids) if rid not in existing]
            elif op == "update":
                keep = [i for i, rid in enumerate(part.ids) if rid in existing]
            else:
                keep = list(range(len(part.ids)))
            summary.ignored = len(part.ids) - len(keep)
            if len(keep) != len(part.ids):
                part = part.select(keep)
            if not part.ids:
                return summary
            embed_at, plain_at, metadata_only_at = self._triage(part, existing, summary)

            # Embed everything this chunk needs before writing any of it.
            fresh = part.select(embed_at)
            texts: list[str] = [doc for doc in fresh.documents or [] if doc is not None]
            dense = fresh.embeddings
            if dense is None:
                dense = embed_dense(self.collection, texts)
            vectors = embed_sparse(self.sparse_function, texts)
            hidden: list[dict[str, Any] | None] = []
            learned: list[tuple[str, Any, Any, Any]] = []
            for rid, doc, vector in zip(fresh.ids, texts, vectors, strict=True):
                terms = np.asarray(vector.indices, dtype=np.int64)
                weights = np.asarray(vector.values, dtype=np.float64)
                encoded = encode_sparse_vector(terms, weights)
                digest = document_hash(doc)
                hidden.append({self.sparse_key: encoded, cache.hash_key: digest})
                learned.append((rid, (digest, vector_hash(encoded)), terms, weights))
            summary.embedded = len(fresh.ids)

            plain = part.select(plain_at)
            metadata_only = part.select(metadata_only_at)
            user = fresh.metadatas or [None] * len(fresh.ids)
            try:
                send(
                    self.collection,
                    op,
                    fresh.ids,
                    embeddings=dense,
                    metadatas=[merge_metadata(u, h) for u, h in zip(user, hidden, strict=True)],
                    documents=fresh.documents,
                )
                send(
                    self.collection,
                    op,
                    plain.ids,
                    embeddings=plain.embeddings,
                    metadatas=plain.metadatas,
                    documents=plain.documents,
                )
                # Chroma's upsert merges metadata into an existing record, as update does.
                send(
                    self.collection,
                    "update",
                    metadata_only.ids,
                    embeddings=None,
                    metadatas=metadata_only.metadatas,
                    documents=None,
                )
            except BaseException:
                cache.write_failed()
                raise
            summary.written = len(fresh.ids) + len(plain.ids) + len(metadata_only.ids)
            new_without_doc = (
                [] if op == "update" else [rid for rid in plain.ids if rid not in existing]
            )
            cache.wrote(before, summary.written, vectors=learned, without_document=new_without_doc)
            return summary

    def _triage(
        self,
        part: WriteBatch,
        existing: Mapping[str, tuple[str | None, Mapping[str, Any] | None]],
        summary: WriteSummary,
    ) -> tuple[list[int], list[int], list[int]]:
        """Positions to embed and write; to write as given; to update metadata only.

        A record whose stored document is the one given and whose stored vector came
        from it (its hash matches) is not embedded: with new dense embeddings it is
        written as given, with new metadata only that is merged in, else nothing is sent.
        """
        embed_at: list[int] = []
        plain_at: list[int] = []
        metadata_only_at: list[int] = []
        cache = self._cache
        for i, rid in enumerate(part.ids):
            doc = None if part.documents is None else part.documents[i]
            if doc is None:
                plain_at.append(i)
                continue
            stored = existing.get(rid)
            if (
                stored is not None
                and stored[0] == doc
                and is_embedded(fingerprint(doc, stored[1], self.sparse_key, cache.hash_key))
            ):
                summary.skipped += 1
                if part.embeddings is not None:
                    plain_at.append(i)
                elif part.metadatas is not None and part.metadatas[i]:
                    metadata_only_at.append(i)
                continue
            embed_at.append(i)
        return embed_at, plain_at, metadata_only_at

    def delete(self, ids: list[str] | None, where: Any, where_document: Any) -> None:
        """Delete by ids and/or filters, as ``collection.delete``."""
        cache = self._cache
        with cache.lock:
            before = cache.mark()
            targets = self.collection.get(
                ids=ids, where=where, where_document=where_document, include=[]
            )["ids"]
            if not targets:
                return
            try:
                for start, end in chunks(len(targets), self._max_batch):
                    self.collection.delete(ids=targets[start:end])
            except BaseException:
                cache.write_failed()  # some batches may be gone already
                raise
            cache.wrote(before, len(targets), deleted=targets)

    def _existing(
        self, ids: list[str], *, with_content: bool
    ) -> dict[str, tuple[str | None, Mapping[str, Any] | None]]:
        include = ["documents", "metadatas"] if with_content else []
        found: dict[str, tuple[str | None, Mapping[str, Any] | None]] = {}
        for start, end in chunks(len(ids), self._max_batch):
            got = self.collection.get(ids=ids[start:end], include=include)
            docs = got.get("documents") or [None] * len(got["ids"])
            metas = got.get("metadatas") or [None] * len(got["ids"])
            for rid, doc, meta in zip(got["ids"], docs, metas, strict=True):
                found[rid] = (doc, meta)
        return found


_SHARED: weakref.WeakValueDictionary[tuple[int, str, str], LocalBackend] = (
    weakref.WeakValueDictionary()
)
_SHARED_LOCK = threading.Lock()


def shared_backend(
    collection: Any,
    sparse_function: Any,
    sparse_key: str,
    *,
    max_batch_size: int,
    bm25: bool = False,
) -> LocalBackend:
    """The one backend of a collection in this process, for clients with no watermark.

    Handles opened on the same collection (same chromadb system, same collection id) get
    the same backend, so one handle's writes are in the cache the others search. It lives
    as long as any handle holds it.
    """
    key = (system_identity(collection), str(collection.id), sparse_key)
    with _SHARED_LOCK:
        backend = _SHARED.get(key)
        if backend is None:
            backend = LocalBackend(
                collection,
                sparse_function,
                sparse_key,
                max_batch_size=max_batch_size,
                watermark=None,
                bm25=bm25,
            )
            _SHARED[key] = backend
        return backend
