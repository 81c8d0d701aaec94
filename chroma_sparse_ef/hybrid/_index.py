"""Exact in-memory sparse index: the sparse leg of hybrid search on embedded Chroma.

Embedded Chroma refuses sparse indexes, so `HybridCollection` keeps the sparse vectors in
each record's metadata (see `_codec`) and answers the sparse leg here. The index is a
cache: everything in it can be rebuilt from the collection.

Scoring is exact: ``score(doc) = sum(q[t] * d[t])`` over the terms both vectors hold. A
document is a *candidate* only if it shares at least one term with the query, both
weights nonzero (explicit zeros are dropped on the way in), as with an inverted index on
Chroma Cloud. A candidate may still score 0 or less when weights have mixed signs.

Layout. Each document gets an internal *slot* (an int). Postings live in immutable
*segments*, each a CSC-like inverted layout: sorted unique term ids, an ``indptr`` into
contiguous ``slots`` (int32) and ``weights`` (float32) arrays. A query gathers its terms'
postings from every segment, multiplies by the query weights and adds them per slot
into a float64 score array (``np.add.at``, one call per term); ``np.argpartition``
picks the top ``limit``.

Writes. `build` loads everything into one segment. Each later `upsert` batch becomes a new
small segment with fresh slots; the replaced slots are marked dead in an ``alive`` mask
(tombstones). Segments are merged like a binary counter (the newer two when the older is
not `_MERGE_FACTOR` times larger), which keeps O(log n) segments and O(log n) amortised
merge work per posting; merges drop dead postings. When dead slots pass
`_COMPACT_DEAD_FRACTION`, everything is rebuilt into one segment with renumbered slots.

Threads. All state a search needs is one immutable `_Snapshot`, replaced atomically by
writers. Searches never block one another. Writers take ``_write_lock`` (one writer at a
time) and do their heavy work outside ``_lock``, which they hold only to update the
id-to-slot map and swap the snapshot; a search with ``allowed`` holds ``_lock`` only while
it turns the ids into slots.

Numbers. Weights are stored as float32, the same precision the codec stores, so an index
built live and one rebuilt from the collection score identically. Query weights are
rounded to float32 too. Products of two float32 are exact in float64 and are summed in
float64 in ascending term order, so a score equals the naive float64 dot product of the
float32-rounded vectors summed in that order, bit for bit.
"""

from __future__ import annotations

import heapq
import operator
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ._index_input import concat_records, validate_csr, validate_query

__all__ = ["SparseIndex"]

#: Merge the two newest segments while the older holds fewer than this many times the
#: postings of the newer, so sizes shrink at least 4x from oldest to newest: at most
#: ~log4(n) segments (8 for 15M postings). Simulated on 100k single-record upserts onto a
#: 15M-posting base: each posting is rewritten ~22 times; bench (d) measured 0.2 ms median
#: per upsert at 100k documents.
_MERGE_FACTOR = 4
#: Renumber slots and rebuild one segment when this fraction of slots is dead. Dead
#: postings are still gathered and scored until then, so 0.25 bounds that waste to 1/3.
_COMPACT_DEAD_FRACTION = 0.25
#: Below this many slots, dead ones cost nothing worth a rebuild.
_COMPACT_MIN_SLOTS = 1024
#: A term sort on uint16 keys uses numpy's radix sort: measured 0.31 s for 14M postings
#: against 1.23 s for the same keys as uint32 (BERT's vocabulary has 30,522 terms).
_UINT16_LIMIT = 2**16

_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]
_I32 = npt.NDArray[np.int32]
_I64 = npt.NDArray[np.int64]
_U32 = npt.NDArray[np.uint32]
_Bool = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class _Segment:
    """Immutable postings: for term ``terms[i]``, ``slots/weights[indptr[i]:indptr[i+1]]``."""

    terms: _U32
    indptr: _I64
    slots: _I32
    weights: _F32
    all_positive: bool

    @property
    def nnz(self) -> int:
        return int(self.slots.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.terms.nbytes + self.indptr.nbytes + self.slots.nbytes + self.weights.nbytes)

    @classmethod
    def from_postings(cls, slots: _I32, terms: npt.NDArray[np.integer], weights: _F32) -> _Segment:
        """Group postings by term; a stable sort keeps slots ascending within a term."""
        nnz = int(terms.shape[0])
        if nnz == 0:
            return cls(
                terms=np.empty(0, np.uint32),
                indptr=np.zeros(1, np.int64),
                slots=np.empty(0, np.int32),
                weights=np.empty(0, np.float32),
                all_positive=True,
            )
        key_type = np.uint16 if int(terms.max()) < _UINT16_LIMIT else np.uint32
        order = np.argsort(terms.astype(key_type, copy=False), kind="stable")
        sorted_terms = terms[order]
        starts = np.flatnonzero(sorted_terms[1:] != sorted_terms[:-1]) + 1
        indptr = np.empty(starts.shape[0] + 2, dtype=np.int64)
        indptr[0] = 0
        indptr[1:-1] = starts
        indptr[-1] = nnz
        sorted_weights = weights[order]
        return cls(
            terms=sorted_terms[indptr[:-1]].astype(np.uint32, copy=False),
            indptr=indptr,
            slots=slots[order].astype(np.int32, copy=False),
            weights=sorted_weights,
            all_positive=bool(np.all(sorted_weights > 0)),
        )

    def postings(self) -> tuple[_I32, npt.NDArray[np.uint32], _F32]:
        """Expand to (slot, term, weight) triples, ordered by term then slot."""
        counts = np.diff(self.indptr)
        return self.slots, np.repeat(self.terms, counts), self.weights

    def accumulate(
        self,
        query_terms: _U32,
        query_weights: _F64,
        scores: _F64,
        touched: _Bool | None,
    ) -> bool:
        """Add this segment's share of the query's dot products into ``scores``.

        Args:
            query_terms: Sorted distinct query term ids.
            query_weights: Their weights.
            scores: Per slot, added to in place.
            touched: If given, set True at every slot that shares a term with the query.

        Returns:
            Whether any posting matched.
        """
        if self.terms.shape[0] == 0:
            return False
        pos = np.searchsorted(self.terms, query_terms)
        pos[pos == self.terms.shape[0]] = 0
        found = self.terms[pos] == query_terms
        if not bool(found.any()):
            return False
        indptr = self.indptr
        for p, w in zip(pos[found].tolist(), query_weights[found].tolist(), strict=True):
            start, end = int(indptr[p]), int(indptr[p + 1])
            slots = self.slots[start:end]
            # Per term, add.at beat concatenating all postings for one np.bincount:
            # 2.3 ms against 3.8 ms for 30 terms over 100k synthetic SPLADE documents.
            # The float64 product of two float32 is exact.
            np.add.at(scores, slots, np.multiply(self.weights[start:end], w, dtype=np.float64))
            if touched is not None:
                touched[slots] = True
        return True


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Everything a search reads. Never mutated once published.

    ``slot_ids`` is shared with later snapshots, which only append to it; a search reads
    only its first ``n_slots`` entries.
    """

    segments: tuple[_Segment, ...]
    alive: _Bool
    slot_ids: list[str]
    n_slots: int

    @property
    def all_positive(self) -> bool:
        return all(seg.all_positive for seg in self.segments)


class SparseIndex:
    """Exact top-k by dot product over sparse vectors, with upserts, deletes and filters.

    Thread-safe: any number of concurrent searches alongside writes. A search sees the
    index as it was when the search started.

    Example::

        index = SparseIndex.build(["a", "b"], [np.array([1, 7]), np.array([7])],
                                  [np.array([0.5, 2.0]), np.array([1.0])])
        index.search(np.array([7]), np.array([1.0]), limit=10)
        # [("a", 2.0), ("b", 1.0)]
    """

    def __init__(self) -> None:
        # A fresh list per index: writers append to ``slot_ids`` in place.
        self._snap = _Snapshot(segments=(), alive=np.zeros(0, np.bool_), slot_ids=[], n_slots=0)
        self._slot_of: dict[str, int] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()

    # ------------------------------------------------------------------ loading

    @classmethod
    def build(
        cls,
        ids: Sequence[str],
        indices: Sequence[npt.ArrayLike],
        values: Sequence[npt.ArrayLike],
    ) -> SparseIndex:
        """Build an index from many records at once (the fast path for loading).

        Args:
            ids: Unique record ids.
            indices: Per record, strictly ascending term ids in ``[0, 2**32)``.
            values: Per record, the weights, same length as its indices; finite.

        Returns:
            A new index holding the records in one segment.

        Raises:
            ValueError: Lengths differ, an id repeats, or a vector is invalid (the message
                names the record).
        """
        indptr, terms, weights = concat_records(ids, indices, values)
        return cls.from_csr(ids, indptr, terms, weights)

    @classmethod
    def from_csr(
        cls,
        ids: Sequence[str],
        indptr: npt.ArrayLike,
        indices: npt.ArrayLike,
        values: npt.ArrayLike,
    ) -> SparseIndex:
        """Build from a CSR batch, as `_codec.decode_sparse_vectors` returns it.

        Args:
            ids: Unique record ids; record ``i`` is ``indices/values[indptr[i]:indptr[i+1]]``.
            indptr: ``len(ids) + 1`` non-decreasing offsets starting at 0.
            indices: Term ids, strictly ascending within each record, in ``[0, 2**32)``.
            values: Finite weights, one per term id.

        Returns:
            A new index holding the records in one segment.

        Raises:
            ValueError: Shapes disagree, an id repeats, or a vector is invalid.
        """
        index = cls()
        index._write(ids, *validate_csr(ids, indptr, indices, values))
        return index

    # ------------------------------------------------------------------ writes

    def upsert(
        self,
        ids: Sequence[str],
        indices: Sequence[npt.ArrayLike],
        values: Sequence[npt.ArrayLike],
    ) -> None:
        """Insert records, replacing any existing record with the same id.

        Args:
            ids: Unique record ids (a repeat within one call is an error).
            indices: Per record, strictly ascending term ids in ``[0, 2**32)``.
            values: Per record, finite weights, same length as its indices. Zeros are
                dropped; weights are stored as float32.

        Raises:
            ValueError: Lengths differ, an id repeats, or a vector is invalid. Nothing is
                written then.
        """
        self._write(ids, *concat_records(ids, indices, values))

    def delete(self, ids: Iterable[str]) -> None:
        """Remove records. Ids not in the index are ignored.

        Args:
            ids: Record ids to remove.
        """
        with self._write_lock:
            snap = self._snap
            slot_of = self._slot_of
            gone = {i: slot_of[i] for i in ids if i in slot_of}
            if not gone:
                return
            alive = snap.alive.copy()
            alive[np.fromiter(gone.values(), dtype=np.int64, count=len(gone))] = False
            new = _Snapshot(snap.segments, alive, snap.slot_ids, snap.n_slots)
            with self._lock:
                for i in gone:
                    del slot_of[i]
                self._snap = new
            self._maybe_compact()

    def compact(self) -> None:
        """Rebuild into one segment without dead postings, renumbering slots.

        Writes do this on their own when needed; call it after a large delete to free
        memory at once.
        """
        with self._write_lock:
            self._compact()

    def _write(
        self, ids: Sequence[str], indptr: _I64, terms: npt.NDArray[np.uint32], weights: _F32
    ) -> None:
        n_new = len(ids)
        if n_new == 0:
            return
        with self._write_lock:
            snap = self._snap
            base = snap.n_slots
            lengths = np.diff(indptr)
            slots = np.repeat(np.arange(base, base + n_new, dtype=np.int32), lengths)
            alive = np.ones(base + n_new, dtype=np.bool_)
            alive[:base] = snap.alive
            replaced = [s for s in map(self._slot_of.get, ids) if s is not None]
            if replaced:
                alive[np.asarray(replaced, dtype=np.int64)] = False
            segments = snap.segments
            if terms.shape[0]:
                segments = _merge_tail(
                    (*segments, _Segment.from_postings(slots, terms, weights)), alive
                )
            slot_ids = snap.slot_ids
            slot_ids.extend(ids)
            new = _Snapshot(segments, alive, slot_ids, base + n_new)
            with self._lock:
                slot_of = self._slot_of
                for offset, record_id in enumerate(ids):
                    slot_of[record_id] = base + offset
                self._snap = new
            self._maybe_compact()

    def _maybe_compact(self) -> None:
        snap = self._snap
        dead = snap.n_slots - len(self._slot_of)
        if snap.n_slots >= _COMPACT_MIN_SLOTS and dead > _COMPACT_DEAD_FRACTION * snap.n_slots:
            self._compact()

    def _compact(self) -> None:
        snap = self._snap
        live = np.flatnonzero(snap.alive)
        new_slot = np.cumsum(snap.alive, dtype=np.int64) - 1
        parts = [seg.postings() for seg in snap.segments]
        segment = _merge_postings(parts, snap.alive, new_slot)
        slot_ids = [snap.slot_ids[s] for s in live.tolist()]
        slot_of = {record_id: s for s, record_id in enumerate(slot_ids)}
        segments = (segment,) if segment.nnz else ()
        new = _Snapshot(segments, np.ones(len(slot_ids), dtype=np.bool_), slot_ids, len(slot_ids))
        with self._lock:
            self._slot_of = slot_of
            self._snap = new

    # ------------------------------------------------------------------ reads

    def search(
        self,
        query_indices: npt.ArrayLike,
        query_values: npt.ArrayLike,
        limit: int,
        allowed: Collection[str] | None = None,
    ) -> list[tuple[str, float]]:
        """The top ``limit`` records by dot product with the query.

        Only candidates count: records sharing at least one term with the query (both
        weights nonzero). Fewer than ``limit`` results come back when fewer records match.

        Args:
            query_indices: Distinct term ids in ``[0, 2**32)``, in any order.
            query_values: Finite weights, one per term id; rounded to float32.
            limit: How many results at most; must be at least 1.
            allowed: If given, only these ids may be returned (e.g. the ids a ``where``
                filter selected). Unknown ids are ignored.

        Returns:
            ``(id, score)`` pairs by descending score; equal scores by ascending id.
            Scores are float64 sums of exact float32 products (see the module docstring).

        Raises:
            ValueError: ``limit`` is below 1, or the query is invalid.
        """
        limit = operator.index(limit)
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        q_terms, q_weights = validate_query(query_indices, query_values)

        allowed_slots: _I64 | None = None
        if allowed is None:
            snap = self._snap
        else:
            with self._lock:
                snap = self._snap
                get = self._slot_of.get
                found = np.array([get(i, -1) for i in allowed], dtype=np.int64)
            allowed_slots = found[found >= 0]
            if allowed_slots.shape[0] == 0:
                return []
        if q_terms.shape[0] == 0 or snap.n_slots == 0:
            return []
        return _top(snap, q_terms, q_weights, limit, allowed_slots)

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._slot_of

    def ids(self) -> list[str]:
        """The ids of the records held, in no particular order."""
        with self._lock:
            return list(self._slot_of)

    @property
    def nbytes(self) -> int:
        """Bytes held in numpy arrays (postings and the alive mask).

        The id map (Python strings, a dict and a list) comes on top: roughly 100-150
        bytes per record for short ids.
        """
        snap = self._snap
        return sum(seg.nbytes for seg in snap.segments) + int(snap.alive.nbytes)

    @property
    def segment_count(self) -> int:
        """How many postings segments a search visits now."""
        return len(self._snap.segments)

    @property
    def dead_count(self) -> int:
        """Slots of replaced or deleted records not reclaimed yet."""
        return self._snap.n_slots - len(self._slot_of)


# ---------------------------------------------------------------------- scoring


def _top(
    snap: _Snapshot,
    q_terms: _U32,
    q_weights: _F64,
    limit: int,
    allowed_slots: _I64 | None,
) -> list[tuple[str, float]]:
    scores = np.zeros(snap.n_slots, dtype=np.float64)
    # With only positive weights a slot is a candidate iff its score is positive (a
    # float64 product of float32 cannot underflow); otherwise track matches explicitly.
    positive = snap.all_positive and bool(np.all(q_weights > 0))
    touched = None if positive else np.zeros(snap.n_slots, dtype=np.bool_)
    matched = False
    for seg in snap.segments:
        matched |= seg.accumulate(q_terms, q_weights, scores, touched)
    if not matched:
        return []
    is_candidate = scores > 0 if touched is None else touched
    is_candidate &= snap.alive
    if allowed_slots is not None:
        allowed_mask = np.zeros(snap.n_slots, dtype=np.bool_)
        allowed_mask[allowed_slots] = True
        is_candidate &= allowed_mask
    candidates = np.flatnonzero(is_candidate)
    cand_scores = scores[candidates]
    slot_ids = snap.slot_ids

    n = candidates.shape[0]
    if n > limit:
        kth = cand_scores[np.argpartition(cand_scores, n - limit)[n - limit]]
        above = cand_scores > kth
        chosen = candidates[above].tolist()
        tied = candidates[cand_scores == kth].tolist()
        need = limit - len(chosen)
        if len(tied) > need:
            tied = heapq.nsmallest(need, tied, key=slot_ids.__getitem__)
        chosen += tied
    else:
        chosen = candidates.tolist()
    results = [(slot_ids[s], float(scores[s])) for s in chosen]
    results.sort(key=lambda r: (-r[1], r[0]))
    return results


# ---------------------------------------------------------------------- merging


def _merge_tail(segments: tuple[_Segment, ...], alive: _Bool) -> tuple[_Segment, ...]:
    """Merge the newest segments while the older is not `_MERGE_FACTOR` times larger."""
    segs = list(segments)
    while len(segs) >= 2 and segs[-2].nnz < _MERGE_FACTOR * segs[-1].nnz:
        newer = segs.pop()
        older = segs.pop()
        merged = _merge_postings([older.postings(), newer.postings()], alive, None)
        if merged.nnz:
            segs.append(merged)
    return tuple(segs)


def _merge_postings(
    parts: list[tuple[_I32, npt.NDArray[np.uint32], _F32]],
    alive: _Bool,
    new_slot: _I64 | None,
) -> _Segment:
    """One segment from postings of older-to-newer segments, dropping dead slots.

    Older segments hold smaller slots, so concatenating in age order and sorting stably by
    term keeps slots ascending within a term.
    """
    slot_list: list[_I32] = []
    term_list: list[npt.NDArray[np.uint32]] = []
    weight_list: list[_F32] = []
    for slots, terms, weights in parts:
        keep = alive[slots]
        kept_slots = slots[keep]
        if new_slot is not None:
            kept_slots = new_slot[kept_slots].astype(np.int32)
        slot_list.append(kept_slots)
        term_list.append(terms[keep])
        weight_list.append(weights[keep])
    if not slot_list:
        return _Segment.from_postings(
            np.empty(0, np.int32), np.empty(0, np.uint32), np.empty(0, np.float32)
        )
    return _Segment.from_postings(
        np.concatenate(slot_list), np.concatenate(term_list), np.concatenate(weight_list)
    )
