"""Hybrid search on embedded Chroma: Chroma is the truth, our sparse index a cache.

Storage. Each record's encoded sparse vector and the hash of the document it came from
live in its metadata (`_stored`). Nothing else is persisted: after a restart the index is
rebuilt from the collection, with no re-embedding.

The cache. A `SparseIndex` built lazily at the first search by paging through
``collection.get(include=["metadatas", "documents"])``, then kept current by our own
writes. Alongside it, ``known`` maps every record id to a fingerprint of what the index
holds for it: ``(document hash, hash of the stored vector string)``, or ``None`` for a
record without a document (it has no sparse vector, as on Chroma Cloud).

Writes by other code (the raw collection, another process) must not make search wrong.
What is detected:

1. PersistentClient: any add/upsert/update/delete on the collection, by anyone, through the
   sqlite log watermark (`_watch`), checked before every search (~10 µs). Our own writes
   move it by exactly the number of records they send; any other movement marks the
   cache stale and the next search reloads it.
2. Every client: ``count()`` against the number of records known, before every search
   (catches adds and deletes that change the count).
3. Every client, every search: each record a leg returns is checked against the cache:
   it must still exist, be known, carry the same stored vector, and its document must
   hash to the stored hash. A mismatch reloads and runs the search again.

On reload, records with a document but no stored vector (added by other code), a
malformed one, or a stored hash that does not match their document (document changed by
other code) are re-embedded and the vector is written back.

4. EphemeralClient and HttpClient (no watermark): every `HybridCollection` handle on the
   same collection in one process shares one `LocalBackend` (`shared_backend`), so a
   write through any handle updates the one cache every handle searches.

Not detected on EphemeralClient and HttpClient: a write by code that bypasses
`HybridCollection` (the raw chromadb collection, or another process behind an HttpClient)
that changes a document, or adds and deletes records leaving the count unchanged, when the
affected record is in neither leg's candidates of the stale cache; the sparse leg can then
miss a record that should have ranked until `refresh()`. Metadata filters and returned fields always come from Chroma itself,
so they are never stale.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from chromadb.api.types import SparseVector

from .._exceptions import HybridSyncError
from ._codec import (
    CorruptSparseVectorError,
    decode_sparse_vector,
    decode_sparse_vectors,
    encode_sparse_vector,
    is_encoded_sparse_vector,
)
from ._fusion import FusedHit, RankedLeg, rrf_fuse, single_leg_hits
from ._index import SparseIndex
from ._plan import KnnLeg, LocalPlan
from ._results import SearchHit, SearchResults, matching_terms
from ._stored import doc_hash_key, document_hash, strip_hidden
from ._watch import SqliteWatermark
from ._writes import WriteBatch, as_sparse_vectors, chunks, embed_in_chunks, merge_metadata

__all__ = ["HybridSyncError", "LocalBackend"]

logger = logging.getLogger(__name__)

#: Records per ``collection.get`` page when loading. Measured on 100k records
#: (bench/bench_hybrid.py): pages of 5k-20k cost the same; 10k keeps ~15 MB of strings live.
LOAD_PAGE = 10_000
#: Times a search reloads and retries when it finds the cache stale mid-search.
_SEARCH_ATTEMPTS = 3
#: Times a load restarts when the collection changed while it was read.
_LOAD_ATTEMPTS = 3

_Fingerprint = tuple[str, int] | None
_MISSING = object()


class _Stale(Exception):
    """Raised inside a search when a returned record disagrees with the cache."""


class LocalBackend:
    """The embedded-Chroma side of `HybridCollection`. Thread-safe."""

    kind = "local"

    def __init__(
        self,
        collection: Any,
        sparse_function: Any,
        sparse_key: str,
        *,
        max_batch_size: int,
        watermark: SqliteWatermark | None,
    ) -> None:
        self.collection = collection
        self.sparse_function = sparse_function
        self.sparse_key = sparse_key
        self.hash_key = doc_hash_key(sparse_key)
        self.reserved = (sparse_key, self.hash_key)
        self._max_batch = max_batch_size
        self._watermark = watermark
        self._lock = threading.RLock()
        self._index: SparseIndex | None = None
        self._known: dict[str, _Fingerprint] = {}
        self._seen: int | None = None
        self._stale = True

    # ------------------------------------------------------------------ cache

    @property
    def index(self) -> SparseIndex | None:
        """The sparse index, or ``None`` before the first search."""
        return self._index

    def load(self) -> None:
        """(Re)build the cache from the collection, re-embedding records that need it."""
        with self._lock:
            for _ in range(_LOAD_ATTEMPTS):
                if self._load_once():
                    return
            # Still changing: keep what was read and let the next search try again;
            # per-record checks guard the searches in between.
            self._stale = True

    def _load_once(self) -> bool:
        before = self._mark()
        ids: list[str] = []
        docs: list[str] = []
        vectors: list[str] = []
        fingerprints: list[tuple[str, int]] = []
        known: dict[str, _Fingerprint] = {}
        redo: list[tuple[str, str]] = []
        for offset in range(0, 2**62, LOAD_PAGE):
            page = self.collection.get(
                include=["metadatas", "documents"], limit=LOAD_PAGE, offset=offset
            )
            page_ids = page["ids"]
            for rid, doc, meta in zip(page_ids, page["documents"], page["metadatas"], strict=True):
                if doc is None:
                    known[rid] = None
                    continue
                vector = meta.get(self.sparse_key) if meta else None
                stored_hash = meta.get(self.hash_key) if meta else None
                if (
                    isinstance(vector, str)
                    and isinstance(stored_hash, str)
                    and is_encoded_sparse_vector(vector)
                    and stored_hash == document_hash(doc)
                ):
                    ids.append(rid)
                    docs.append(doc)
                    vectors.append(vector)
                    fingerprints.append((stored_hash, hash(vector)))
                else:
                    redo.append((rid, doc))
            if len(page_ids) < LOAD_PAGE:
                break
        while True:
            try:
                indptr, terms, weights = decode_sparse_vectors(vectors)
                break
            except CorruptSparseVectorError as exc:
                # A malformed stored vector: re-embed that record like a missing one.
                bad = exc.record or 0
                redo.append((ids.pop(bad), docs.pop(bad)))
                del vectors[bad], fingerprints[bad]
        index = SparseIndex.from_csr(ids, indptr, terms, weights)
        known.update(zip(ids, fingerprints, strict=True))
        self._index, self._known = index, known
        sent = self._write_back(redo) if redo else 0
        return self._settle(before, sent)

    def _write_back(self, redo: list[tuple[str, str]]) -> int:
        """Embed documents whose stored vector is missing or outdated; store the vectors."""
        logger.info("re-embedding %d records whose sparse vector is missing or stale", len(redo))
        ids = [rid for rid, _ in redo]
        docs = [doc for _, doc in redo]
        hidden, fingerprints, parsed = self._embed_sparse(docs, progress=False)
        for start, end in chunks(len(ids), self._max_batch):
            self.collection.update(ids=ids[start:end], metadatas=hidden[start:end])
        self._apply_vectors(ids, fingerprints, parsed)
        return len(ids)

    def _mark(self) -> int | None:
        return None if self._watermark is None else self._watermark.read()

    def _settle(self, before: int | None, sent: int) -> bool:
        """After a load or our write: is the cache now exactly the collection?"""
        if self._watermark is not None:
            now = self._watermark.read()
            fresh = before is not None and now - before == sent
            self._seen = now
        else:
            fresh = self.collection.count() == len(self._known)
        self._stale = not fresh
        return fresh

    def ensure_fresh(self) -> None:
        """Reload the cache if it was never built or the collection changed."""
        with self._lock:
            if self._index is None or self._stale:
                self.load()
            elif self._watermark is not None:
                if self._watermark.read() != self._seen:
                    self.load()
            elif self.collection.count() != len(self._known):
                self.load()

    def _after_write(self, before: int | None, sent: int) -> None:
        if self._index is None:
            return
        if self._watermark is not None and before != self._seen:
            self._stale = True  # someone else wrote since we last looked
            return
        self._settle(before, sent)

    # ------------------------------------------------------------------ writes

    def _embed_sparse(
        self, docs: list[str], *, progress: bool
    ) -> tuple[list[dict[str, Any]], list[tuple[str, int]], list[SparseVector]]:
        vectors = as_sparse_vectors(
            embed_in_chunks(self.sparse_function, docs, progress=progress, desc="sparse embedding"),
            "documents",
        )
        hidden: list[dict[str, Any]] = []
        fingerprints: list[tuple[str, int]] = []
        for doc, vector in zip(docs, vectors, strict=True):
            encoded = encode_sparse_vector(
                np.asarray(vector.indices, dtype=np.int64), np.asarray(vector.values)
            )
            digest = document_hash(doc)
            hidden.append({self.sparse_key: encoded, self.hash_key: digest})
            fingerprints.append((digest, hash(encoded)))
        return hidden, fingerprints, vectors

    def _apply_vectors(
        self, ids: list[str], fingerprints: list[tuple[str, int]], vectors: list[SparseVector]
    ) -> None:
        if self._index is None or not ids:
            return
        self._index.upsert(
            ids,
            [np.asarray(v.indices, dtype=np.int64) for v in vectors],
            [np.asarray(v.values, dtype=np.float64) for v in vectors],
        )
        self._known.update(zip(ids, fingerprints, strict=True))

    def write(self, op: str, batch: WriteBatch, *, progress: bool) -> None:
        """``add``, ``upsert`` or ``update`` with Chroma's semantics; sparse embedded first.

        Dense and sparse embeddings are computed before anything is written, so an
        embedding failure writes nothing. A Chroma error after the first of several
        batches leaves the earlier batches written (Chroma has no multi-batch
        transaction); the cache is then marked stale and rebuilt on the next search.
        """
        with self._lock:
            before = self._mark() if self._index is not None else None
            existing = self._existing(batch.ids)
            if op == "add":
                # Chroma ignores an add of an existing id; do the same, without embedding it.
                keep = [i for i, rid in enumerate(batch.ids) if rid not in existing]
            elif op == "update":
                keep = [i for i, rid in enumerate(batch.ids) if rid in existing]
            else:
                keep = list(range(len(batch.ids)))
            if len(keep) != len(batch.ids):
                batch = _select(batch, keep)
            if not batch.ids:
                return
            embeddings: Any = batch.embeddings
            if embeddings is None and batch.documents is not None:
                texts = [doc for doc in batch.documents if doc is not None]
                embeddings = embed_in_chunks(
                    self._embed_dense, texts, progress=progress, desc="dense embedding"
                )
            with_docs = batch.documents_to_embed()
            hidden, fingerprints, vectors = self._embed_sparse(
                [doc for _, doc in with_docs], progress=progress
            )
            hidden_at = {pos: h for (pos, _), h in zip(with_docs, hidden, strict=True)}
            user = batch.metadatas or [None] * len(batch.ids)
            metadatas = [merge_metadata(user[i], hidden_at.get(i)) for i in range(len(batch.ids))]
            send = getattr(self.collection, op)
            total = len(batch.ids)
            try:
                with _bar(progress, total, f"{op} to Chroma") as bar:
                    for start, end in chunks(total, self._max_batch):
                        send(
                            ids=batch.ids[start:end],
                            embeddings=None if embeddings is None else embeddings[start:end],
                            metadatas=metadatas[start:end] if any(metadatas[start:end]) else None,
                            documents=None
                            if batch.documents is None
                            else batch.documents[start:end],
                        )
                        bar.update(end - start)
            except BaseException:
                # Earlier batches may be in Chroma already: the next search reloads.
                self._stale = True
                raise
            if self._index is not None:
                embedded_ids = [batch.ids[pos] for pos, _ in with_docs]
                self._apply_vectors(embedded_ids, fingerprints, vectors)
                if op != "update":
                    for rid in set(batch.ids) - set(embedded_ids) - existing:
                        self._known[rid] = None  # a new record without a document
            self._after_write(before, total)

    def delete(self, ids: list[str] | None, where: Any, where_document: Any) -> None:
        """Delete by ids and/or filters, as ``collection.delete``."""
        with self._lock:
            before = self._mark() if self._index is not None else None
            targets = self.collection.get(
                ids=ids, where=where, where_document=where_document, include=[]
            )["ids"]
            if not targets:
                return
            try:
                for start, end in chunks(len(targets), self._max_batch):
                    self.collection.delete(ids=targets[start:end])
            except BaseException:
                self._stale = True  # some batches may be gone already
                raise
            if self._index is not None:
                self._index.delete(targets)
                for rid in targets:
                    self._known.pop(rid, None)
            self._after_write(before, len(targets))

    def _existing(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start, end in chunks(len(ids), self._max_batch):
            found.update(self.collection.get(ids=ids[start:end], include=[])["ids"])
        return found

    def _embed_dense(self, texts: list[str]) -> Any:
        # The collection's own path (CollectionCommon._embed): the function passed in, else
        # the persisted or schema one, else Chroma's default; exactly what add() would use.
        return self.collection._embed(input=texts, is_query=False)

    # ------------------------------------------------------------------ search

    def search(self, plan: LocalPlan) -> SearchResults:
        """Run a plan: dense leg via ``collection.query``, sparse leg via the index, RRF.

        Raises:
            HybridSyncError: Other code kept writing while the search retried.
        """
        for _ in range(_SEARCH_ATTEMPTS):
            self.ensure_fresh()
            try:
                return self._search_once(plan)
            except _Stale:
                with self._lock:
                    self._stale = True
        raise HybridSyncError(
            f"The collection changed during {_SEARCH_ATTEMPTS} attempts at this search; retry"
        )

    def _search_once(self, plan: LocalPlan) -> SearchResults:
        if plan.ids is not None and not plan.ids:
            return SearchResults(hits=(), backend="local")  # as Cloud: no id, no row
        if not plan.legs:
            return self._unranked(plan)
        records: dict[str, tuple[str | None, Mapping[str, Any] | None, Any]] = {}
        ranked: list[RankedLeg] = []
        query_vector: SparseVector | None = None
        for leg in plan.legs:
            if leg.kind == "dense":
                ranked.append(self._dense_leg(leg, plan, records))
            else:
                query_vector = self._query_vector(leg)
                ranked.append(self._sparse_leg(leg, query_vector, plan, records))
        fused: list[FusedHit]
        if plan.rrf is not None:
            fused = rrf_fuse(
                ranked,
                k=plan.rrf.k,
                weights=plan.rrf.weights,
                defaults=[leg.default for leg in plan.legs],
            )
        else:
            fused = single_leg_hits(ranked[0], return_rank=plan.legs[0].return_rank)
        end = None if plan.limit is None else plan.offset + plan.limit
        kinds = [leg.kind for leg in plan.legs]
        hits = []
        for hit in fused[plan.offset : end]:
            doc, meta, embedding = records[hit.id]
            ranks: dict[str, int | None] = dict(zip(kinds, hit.ranks, strict=True))
            matches: tuple[Any, ...] = ()
            if ranks.get("sparse") is not None and query_vector is not None and meta:
                stored = decode_sparse_vector(meta[self.sparse_key])
                matches = matching_terms(
                    np.asarray(query_vector.indices),
                    np.asarray(query_vector.values),
                    query_vector.labels,
                    *stored,
                )
            hits.append(self._hit(plan, hit.id, hit.score, doc, meta, embedding, ranks, matches))
        return SearchResults(hits=tuple(hits), backend="local")

    def _hit(
        self,
        plan: LocalPlan,
        rid: str,
        score: float | None,
        doc: str | None,
        meta: Mapping[str, Any] | None,
        embedding: Any,
        ranks: Mapping[str, int | None],
        matches: tuple[Any, ...],
    ) -> SearchHit:
        select = plan.select
        metadata = None
        if select.metadata:
            metadata = strip_hidden(meta, self.reserved)
        elif select.metadata_keys and meta:
            metadata = {
                k: meta[k] for k in select.metadata_keys if k in meta and k not in self.reserved
            } or None
        return SearchHit(
            id=rid,
            score=score if select.score else None,
            document=doc if select.document else None,
            metadata=metadata,
            embedding=None
            if embedding is None or not select.embedding
            else list(map(float, embedding)),
            dense_rank=ranks.get("dense"),
            sparse_rank=ranks.get("sparse"),
            matches=matches,
        )

    def _include(self, plan: LocalPlan) -> list[str]:
        return ["metadatas", "documents", *(["embeddings"] if plan.select.embedding else [])]

    def _dense_leg(self, leg: KnnLeg, plan: LocalPlan, records: dict[str, Any]) -> RankedLeg:
        if not self._known:
            return RankedLeg(ids=(), scores=())
        query: dict[str, Any] = (
            {"query_texts": [leg.query]}
            if isinstance(leg.query, str)
            else {"query_embeddings": [list(leg.query)]}  # type: ignore[arg-type]
        )
        result = self.collection.query(
            **query,
            n_results=leg.limit,
            where=plan.where,
            where_document=plan.where_document,
            ids=None if plan.ids is None else list(plan.ids),
            include=[*self._include(plan), "distances"],
        )
        ids = result["ids"][0]
        embeddings = result["embeddings"][0] if result.get("embeddings") is not None else None
        for i, rid in enumerate(ids):
            doc, meta = result["documents"][0][i], result["metadatas"][0][i]
            self._verify(rid, doc, meta)
            records[rid] = (doc, meta, None if embeddings is None else embeddings[i])
        return RankedLeg(ids=tuple(ids), scores=tuple(map(float, result["distances"][0])))

    def _query_vector(self, leg: KnnLeg) -> SparseVector:
        if isinstance(leg.query, SparseVector):
            return leg.query
        vectors = as_sparse_vectors(self.sparse_function.embed_query([leg.query]), "the query")
        return vectors[0]

    def _sparse_leg(
        self, leg: KnnLeg, query: SparseVector, plan: LocalPlan, records: dict[str, Any]
    ) -> RankedLeg:
        index = self._index
        if index is None or not query.indices:
            return RankedLeg(ids=(), scores=())
        allowed = None
        if plan.where is not None or plan.where_document is not None or plan.ids is not None:
            allowed = self.collection.get(
                ids=None if plan.ids is None else list(plan.ids),
                where=plan.where,
                where_document=plan.where_document,
                include=[],
            )["ids"]
        found = index.search(
            np.asarray(query.indices, dtype=np.int64),
            np.asarray(query.values, dtype=np.float64),
            leg.limit,
            allowed,
        )
        need = [rid for rid, _ in found if rid not in records]
        if need:
            got = self.collection.get(ids=need, include=self._include(plan))
            if len(got["ids"]) != len(need):
                raise _Stale  # a candidate was deleted by other code
            embeddings = got.get("embeddings")
            for i, rid in enumerate(got["ids"]):
                doc, meta = got["documents"][i], got["metadatas"][i]
                self._verify(rid, doc, meta)
                records[rid] = (doc, meta, None if embeddings is None else embeddings[i])
        # Chroma Cloud scores a sparse Knn by 1 - dot (see `_plan`).
        return RankedLeg(
            ids=tuple(rid for rid, _ in found), scores=tuple(1.0 - s for _, s in found)
        )

    def _verify(self, rid: str, doc: str | None, meta: Mapping[str, Any] | None) -> None:
        expected = self._known.get(rid, _MISSING)
        if expected is _MISSING:
            raise _Stale
        if doc is None:
            if expected is not None:
                raise _Stale
            return
        vector = meta.get(self.sparse_key) if meta else None
        stored_hash = meta.get(self.hash_key) if meta else None
        if (
            expected is None
            or stored_hash != document_hash(doc)
            or expected != (stored_hash, hash(vector))
        ):
            raise _Stale

    def _unranked(self, plan: LocalPlan) -> SearchResults:
        got = self.collection.get(
            ids=None if plan.ids is None else list(plan.ids),
            where=plan.where,
            where_document=plan.where_document,
            limit=plan.limit,
            offset=plan.offset or None,
            include=self._include(plan),
        )
        embeddings = got.get("embeddings")
        hits = [
            self._hit(
                plan,
                rid,
                None,
                got["documents"][i],
                got["metadatas"][i],
                None if embeddings is None else embeddings[i],
                {},
                (),
            )
            for i, rid in enumerate(got["ids"])
        ]
        return SearchResults(hits=tuple(hits), backend="local")

    def close(self) -> None:
        """Release the watermark's sqlite connection."""
        if self._watermark is not None:
            self._watermark.close()


_SHARED: weakref.WeakValueDictionary[tuple[int, str, str], LocalBackend] = (
    weakref.WeakValueDictionary()
)
_SHARED_LOCK = threading.Lock()


def shared_backend(
    collection: Any, sparse_function: Any, sparse_key: str, *, max_batch_size: int
) -> LocalBackend:
    """The one backend of a collection in this process, for clients with no watermark.

    Handles opened on the same collection (same chromadb system, same collection id) get
    the same backend, so one handle's writes are in the cache the others search. It lives
    as long as any handle holds it.
    """
    key = (id(collection._client), str(collection.id), sparse_key)
    with _SHARED_LOCK:
        backend = _SHARED.get(key)
        if backend is None:
            backend = LocalBackend(
                collection,
                sparse_function,
                sparse_key,
                max_batch_size=max_batch_size,
                watermark=None,
            )
            _SHARED[key] = backend
        return backend


def _select(batch: WriteBatch, keep: Sequence[int]) -> WriteBatch:
    def pick(values: list[Any] | None) -> Any:
        return None if values is None else [values[i] for i in keep]

    return WriteBatch(
        ids=pick(batch.ids),
        documents=pick(batch.documents),
        metadatas=pick(batch.metadatas),
        embeddings=pick(batch.embeddings),
    )


def _bar(progress: bool, total: int, desc: str) -> Any:
    from ._writes import progress_bar

    return progress_bar(progress and total > 0, total, desc, unit="record")
