"""Running a `LocalPlan` on embedded Chroma: dense leg by ``collection.query``, sparse leg
by the cache's index, fused with RRF as Chroma Cloud fuses.

Every record a leg returns is checked against the cache (`CacheCoherence.matches`); a
mismatch means another writer got there first, and the search runs again once the cache
has caught up. Records set aside as pending are in the dense leg only; a search with a
sparse leg logs one warning naming them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from chromadb.api.types import SparseVector

from .._exceptions import HybridSyncError
from ._codec import decode_sparse_vector
from ._coherence import CacheCoherence
from ._fusion import FusedHit, RankedLeg, rrf_fuse, single_leg_hits
from ._plan import KnnLeg, LocalPlan
from ._results import SearchHit, SearchResults, matching_terms
from ._stored import strip_hidden
from ._writes import as_sparse_vectors

__all__ = ["LocalSearch"]

logger = logging.getLogger(__name__)

#: Times a search catches up and retries when it finds the cache behind mid-search.
_SEARCH_ATTEMPTS = 3
#: Pending records named in a search's warning; the rest are counted.
_PENDING_NAMED = 3


class _Stale(Exception):
    """Raised inside a search when a returned record disagrees with the cache."""


class LocalSearch:
    """Searches one embedded collection through its cache."""

    def __init__(self, cache: CacheCoherence, reserved: tuple[str, ...], *, bm25: bool) -> None:
        self._cache = cache
        self._reserved = reserved
        self._bm25 = bm25

    @property
    def _collection(self) -> Any:
        return self._cache.collection

    def search(self, plan: LocalPlan) -> SearchResults:
        """Run a plan against the collection as it is now.

        Raises:
            HybridSyncError: Other code kept writing while the search retried.
        """
        for _ in range(_SEARCH_ATTEMPTS):
            self._cache.ensure_fresh()
            try:
                results = self._search_once(plan)
            except _Stale:
                self._cache.suspect()
                continue
            if plan.sparse is not None:
                self._warn_pending()
            return results
        raise HybridSyncError(
            f"The collection changed during {_SEARCH_ATTEMPTS} attempts at this search; retry"
        )

    def _warn_pending(self) -> None:
        pending = self._cache.pending()
        if not pending:
            return
        named = "; ".join(f"{p.id!r} ({p.reason})" for p in pending[:_PENDING_NAMED])
        more = len(pending) - _PENDING_NAMED
        logger.warning(
            "the sparse leg cannot rank %d pending record(s) whose document could not be "
            "embedded: %s%s (HybridCollection.pending() lists them; refresh() retries)",
            len(pending),
            named,
            f"; and {more} more" if more > 0 else "",
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
        sparse_key = self._cache.sparse_key
        query_weights = self._explained_weights(query_vector)
        for hit in fused[plan.offset : end]:
            doc, meta, embedding = records[hit.id]
            ranks: dict[str, int | None] = dict(zip(kinds, hit.ranks, strict=True))
            matches: tuple[Any, ...] = ()
            if ranks.get("sparse") is not None and query_vector is not None and meta:
                stored = decode_sparse_vector(meta[sparse_key])
                matches = matching_terms(
                    np.asarray(query_vector.indices),
                    query_weights,
                    query_vector.labels,
                    *stored,
                )
            hits.append(self._hit(plan, hit.id, hit.score, doc, meta, embedding, ranks, matches))
        return SearchResults(hits=tuple(hits), backend="local")

    def _explained_weights(self, query: SparseVector | None) -> npt.NDArray[np.float64]:
        """The query weights the sparse leg scored with: IDF-scaled under bm25, as Cloud.

        So each `TermMatch` shows the weight that counted and contributions add up to the
        dot product the hit was ranked by.
        """
        if query is None:
            return np.empty(0, np.float64)
        values = np.asarray(query.values, dtype=np.float64)
        index = self._cache.index
        if not self._bm25 or index is None or not query.indices:
            return values
        idf = index.idf(np.asarray(query.indices, dtype=np.int64), len(self._cache.known))
        return (values.astype(np.float32) * idf).astype(np.float64)

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
            metadata = strip_hidden(meta, self._reserved)
        elif select.metadata_keys and meta:
            metadata = {
                k: meta[k] for k in select.metadata_keys if k in meta and k not in self._reserved
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

    def _check(self, rid: str, doc: str | None, meta: Mapping[str, Any] | None) -> None:
        if not self._cache.matches(rid, doc, meta):
            raise _Stale

    def _dense_leg(self, leg: KnnLeg, plan: LocalPlan, records: dict[str, Any]) -> RankedLeg:
        if not self._cache.known:
            return RankedLeg(ids=(), scores=())
        query: dict[str, Any] = (
            {"query_texts": [leg.query]}
            if isinstance(leg.query, str)
            else {"query_embeddings": [list(leg.query)]}  # type: ignore[arg-type]
        )
        result = self._collection.query(
            **query,
            n_results=leg.limit,
            where=plan.where,
            where_document=plan.where_document,
            ids=None if plan.ids is None else list(plan.ids),
            include=[*self._include(plan), "distances"],
        )
        ids = result["ids"][0]
        embeddings = result["embeddings"][0] if result.get("embeddings") is not None else None
        ghosts = self._ghosts(ids, result["documents"][0], result["metadatas"][0])
        kept: list[str] = []
        distances: list[float] = []
        for i, rid in enumerate(ids):
            if rid in ghosts:
                continue
            doc, meta = result["documents"][0][i], result["metadatas"][0][i]
            self._check(rid, doc, meta)
            records[rid] = (doc, meta, None if embeddings is None else embeddings[i])
            kept.append(rid)
            distances.append(float(result["distances"][0][i]))
        return RankedLeg(ids=tuple(kept), scores=tuple(distances))

    def _ghosts(
        self,
        ids: list[str],
        docs: list[str | None],
        metas: list[Mapping[str, Any] | None],
    ) -> set[str]:
        """Ids the dense leg returned that no longer exist: drop them, do not retry.

        chromadb keeps each process's vector index in memory and does not apply writes
        made by another process to it (seen on 1.5.9 with two PersistentClients on one
        path): its ``query`` can return a record the other process deleted, with no
        document and no metadata, and misses the records it added. Retrying cannot
        help, so such ids are dropped when Chroma's records (always current) lack them.
        """
        suspects = [
            rid
            for rid, doc, meta in zip(ids, docs, metas, strict=True)
            if doc is None and meta is None and rid not in self._cache.known
        ]
        if not suspects:
            return set()
        present = set(self._collection.get(ids=suspects, include=[])["ids"])
        return {rid for rid in suspects if rid not in present}

    def _query_vector(self, leg: KnnLeg) -> SparseVector:
        if isinstance(leg.query, SparseVector):
            return leg.query
        function = self._cache.sparse_function
        return as_sparse_vectors(function.embed_query([leg.query]), "the query")[0]

    def _sparse_leg(
        self, leg: KnnLeg, query: SparseVector, plan: LocalPlan, records: dict[str, Any]
    ) -> RankedLeg:
        index = self._cache.index
        if index is None or not query.indices:
            return RankedLeg(ids=(), scores=())
        allowed = None
        if plan.where is not None or plan.where_document is not None or plan.ids is not None:
            allowed = self._collection.get(
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
            # Cloud's n counts every record, with a sparse vector or not: all are known.
            idf_records=len(self._cache.known) if self._bm25 else None,
        )
        need = [rid for rid, _ in found if rid not in records]
        if need:
            got = self._collection.get(ids=need, include=self._include(plan))
            if len(got["ids"]) != len(need):
                raise _Stale  # a candidate was deleted by other code
            embeddings = got.get("embeddings")
            for i, rid in enumerate(got["ids"]):
                doc, meta = got["documents"][i], got["metadatas"][i]
                self._check(rid, doc, meta)
                records[rid] = (doc, meta, None if embeddings is None else embeddings[i])
        # Chroma Cloud scores a sparse Knn by 1 - dot (see `_plan`).
        return RankedLeg(
            ids=tuple(rid for rid, _ in found), scores=tuple(1.0 - s for _, s in found)
        )

    def _unranked(self, plan: LocalPlan) -> SearchResults:
        got = self._collection.get(
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
