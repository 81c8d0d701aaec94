"""Exact in-memory sparse index: the sparse leg of hybrid search on embedded Chroma.

Embedded Chroma refuses sparse indexes, so `HybridCollection` keeps the sparse vectors in
each record's metadata (see `_codec`) and answers the sparse leg here. The index is a
cache: everything in it can be rebuilt from the collection.

Scoring is exact: ``score(doc) = sum(q[t] * d[t])`` over the terms both vectors hold. A
document is a *candidate* only if it shares at least one term with the query, both
weights nonzero (explicit zeros are dropped on the way in), as with an inverted index on
Chroma Cloud. A candidate may still score 0 or less when weights have mixed signs.

Layout. Each document gets an internal *slot* (an int). Postings live in immutable
*segments* (`_segments`), each a CSC-like inverted layout: sorted unique term ids, and
per term contiguous ``slots`` (int32) and ``weights`` (float32), long terms split into
impact tiers. A search takes one of four exact paths (`_scoring` picks), all summing
the same products in the same order:

- compiled (`_kernel`, when numba is installed): every posting of the query's terms,
  summed block by block of slots in a cache-sized buffer, keeping only the slots that
  reach the running k-th best score; big queries split over threads;
- exhaustive: gather every posting of the query's terms, ``np.add.at`` per term into a
  float64 score per slot, pick the top ``limit``;
- pruned (`_pruning`, positive weights, few long lists): read the heaviest tier of each
  term, and stop there if bounds prove the rest cannot reach the top k (else exhaustive);
- direct (a small ``allowed`` set): score just those slots by binary search.

IDF. With ``idf_records=n``, query weights are scaled by Chroma Cloud's BM25 IDF
(`_idf`), with ``n_t`` the live records holding the term, counted from the postings and
the tombstones of the snapshot the search reads (cached per snapshot).

Writes. `build` loads everything into one segment (`from_csr_pages`: a few, page by
page, to bound the peak; a snapshot file restores the segments as they were). Each later `upsert` batch becomes a new
small segment with fresh slots; the replaced slots are marked dead in the ``alive``
bitmap (tombstones; 1 bit per slot, `_bitmap`). Segments are merged like a binary counter (the newer two when the older is
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

import operator
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from . import _bitmap
from ._idf import bm25_idf, live_term_counts
from ._index_input import concat_records, validate_csr, validate_query
from ._scoring import top_k
from ._segments import Segment, merge_postings

__all__ = ["IndexState", "SparseIndex"]

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
#: Smallest segment `from_csr_pages` builds (postings; 32 MiB of output): fewer, larger
#: segments cost less per query, and below this the peak it bounds is small anyway.
_PAGE_SEGMENT_MIN = 2**22

_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]
_I32 = npt.NDArray[np.int32]
_I64 = npt.NDArray[np.int64]
_U32 = npt.NDArray[np.uint32]
_U8 = npt.NDArray[np.uint8]
_Bool = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Everything a search reads. Never mutated once published.

    ``slot_ids`` is shared with later snapshots, which only append to it; a search reads
    only its first ``n_slots`` entries. ``alive`` is a `_bitmap` of ``n_slots`` slots.
    """

    segments: tuple[Segment, ...]
    alive: _U8
    slot_ids: list[str]
    n_slots: int
    #: Lazily filled caches of values derived from the fields above (so safe to share).
    cache: dict[object, object] = field(default_factory=dict, compare=False)

    @property
    def all_positive(self) -> bool:
        return all(seg.all_positive for seg in self.segments)

    def dead_slots(self) -> _I64:
        """Sorted dead slots (cached)."""
        dead = self.cache.get("dead")
        if dead is None:
            dead = np.flatnonzero(~self.alive_mask()).astype(np.int64)
            self.cache["dead"] = dead
        assert isinstance(dead, np.ndarray)
        return dead

    def alive_mask(self) -> _Bool:
        """``alive`` as one bool per slot: a new array, for the caller's call only."""
        return _bitmap.unpack(self.alive, self.n_slots)

    def idf_of(self, n: int, q_terms: _U32) -> _F32:
        """Cloud's BM25 IDF of the sorted query terms with ``n`` records."""
        return bm25_idf(n, self.term_counts(q_terms))

    def term_counts(self, q_terms: _U32) -> _I64:
        """Live records holding each query term (cached per term while any slot is dead).

        With no dead slot a term's count is its postings: one vectorised lookup per
        segment (a few microseconds), whether the terms were seen before or not.
        """
        if self.dead_slots().shape[0] == 0:
            total = np.zeros(q_terms.shape[0], dtype=np.int64)
            for seg in self.segments:
                pos, present = seg.find(q_terms)
                rows = seg.bounds[pos[present]]
                total[present] += rows[:, -1].astype(np.int64) - rows[:, 0]
            return total
        counts = np.empty(q_terms.shape[0], dtype=np.int64)
        missing = []
        for i, t in enumerate(q_terms.tolist()):
            got = self.cache.get(("df", t))
            if got is None:
                missing.append(i)
            else:
                assert isinstance(got, int)
                counts[i] = got
        if missing:
            idx = np.asarray(missing, dtype=np.int64)
            found = live_term_counts(self.segments, self.alive, self.dead_slots(), q_terms[idx])
            for i, c in zip(missing, found.tolist(), strict=True):
                counts[i] = c
                self.cache[("df", int(q_terms[i]))] = c
        return counts


@dataclass(frozen=True, slots=True)
class IndexState:
    """Everything an index holds, as plain arrays: what `_snapshot` writes and reads.

    Attributes:
        slot_ids: The record id of every slot, dead ones included.
        alive: Per slot, whether it holds a live record: a `_bitmap` of
            ``len(slot_ids)`` slots (pad bits 0).
        segments: The postings segments, oldest first.
    """

    slot_ids: list[str]
    alive: _U8
    segments: tuple[Segment, ...]


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
        self._snap = _Snapshot(segments=(), alive=_bitmap.full(0), slot_ids=[], n_slots=0)
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

    @classmethod
    def from_csr_pages(
        cls,
        pages: Iterable[tuple[Sequence[str], npt.ArrayLike, npt.ArrayLike, npt.ArrayLike]],
    ) -> SparseIndex:
        """Build from CSR pages (e.g. one per Chroma ``get`` page) with a bounded peak.

        Decoding everything and then calling `from_csr` holds the decoded vectors and
        the index at once: twice the index. Here each page is consumed as it comes, and
        buffered pages become a segment once they hold 2/3 of the postings indexed so
        far (at least `_PAGE_SEGMENT_MIN`): a segment build then holds at most 0.4x the
        final index twice over, so the peak stays under ~1.4x the index plus one page.
        Segment sizes grow geometrically: about 7 segments for 150M postings.

        Args:
            pages: ``(ids, indptr, indices, values)`` per page, as for `from_csr`.

        Returns:
            A new index holding every page's records.

        Raises:
            ValueError: A page is invalid, or an id repeats (within or across pages).
        """
        slot_ids: list[str] = []
        segments: list[Segment] = []
        buffer: list[tuple[_I64, npt.NDArray[np.uint32], _F32]] = []
        buffered = indexed = base = 0
        for ids, indptr, indices, values in pages:
            ids = list(ids)
            part = validate_csr(ids, indptr, indices, values)
            buffer.append(part)
            slot_ids.extend(ids)
            buffered += int(part[1].shape[0])
            if buffered >= max(_PAGE_SEGMENT_MIN, 2 * indexed // 3):
                segments.append(Segment.from_records(base, buffer))
                base = len(slot_ids)
                indexed += buffered
                buffer, buffered = [], 0
        if buffer:
            segments.append(Segment.from_records(base, buffer))
        slot_of = {record_id: s for s, record_id in enumerate(slot_ids)}
        if len(slot_of) != len(slot_ids):
            raise ValueError("ids must be unique across pages")
        index = cls()
        index._slot_of = slot_of
        index._snap = _Snapshot(
            tuple(seg for seg in segments if seg.nnz),
            _bitmap.full(len(slot_ids)),
            slot_ids,
            len(slot_ids),
        )
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
            alive = _bitmap.clear(
                snap.alive, np.fromiter(gone.values(), dtype=np.int64, count=len(gone))
            )
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
            alive = _bitmap.extend(snap.alive, base, n_new)
            replaced = [s for s in map(self._slot_of.get, ids) if s is not None]
            if replaced:
                alive = _bitmap.clear(alive, np.asarray(replaced, dtype=np.int64))
            segments = snap.segments
            if terms.shape[0]:
                fresh = Segment.from_records(base, [(indptr, terms, weights)])
                segments = _merge_tail((*segments, fresh), alive, base + n_new)
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
        mask = snap.alive_mask()
        live = np.flatnonzero(mask)
        new_slot = np.cumsum(mask, dtype=np.int64) - 1
        segment = merge_postings(list(snap.segments), mask, new_slot)
        del mask, new_slot
        slot_ids = [snap.slot_ids[s] for s in live.tolist()]
        slot_of = {record_id: s for s, record_id in enumerate(slot_ids)}
        segments = (segment,) if segment.nnz else ()
        new = _Snapshot(segments, _bitmap.full(len(slot_ids)), slot_ids, len(slot_ids))
        with self._lock:
            self._slot_of = slot_of
            self._snap = new

    # ------------------------------------------------------------------ reads

    def idf(self, query_indices: npt.ArrayLike, records: int) -> npt.NDArray[np.float32]:
        """Chroma Cloud's BM25 IDF of each query term, as `search(idf_records=records)` uses.

        Args:
            query_indices: Distinct term ids, in any order.
            records: ``n``, the records in the collection.

        Returns:
            One float32 IDF per term, in the order given (`bm25_idf` of ``records`` and the
            live records here holding the term).
        """
        terms = np.asarray(query_indices, dtype=np.int64)
        if terms.ndim != 1:
            raise ValueError(f"query indices must be 1-D, got shape {terms.shape}")
        if terms.shape[0] == 0:
            return np.empty(0, np.float32)
        snap = self._snap
        order = np.argsort(terms, kind="stable")
        counts = np.empty(terms.shape[0], dtype=np.int64)
        counts[order] = snap.term_counts(terms[order].astype(np.uint32))
        # As in `search`: never fewer records than the index holds live.
        n = max(operator.index(records), snap.n_slots - int(snap.dead_slots().shape[0]))
        return bm25_idf(n, counts)

    def search(
        self,
        query_indices: npt.ArrayLike,
        query_values: npt.ArrayLike,
        limit: int,
        allowed: Collection[str] | None = None,
        *,
        idf_records: int | None = None,
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
            idf_records: If given, scale each query weight by Chroma Cloud's BM25 IDF
                (`bm25_idf`) with this many records in the collection (records without a
                sparse vector count too) and ``n_t`` the live records here holding the
                term; the product is rounded to float32, as Cloud does. A count below the
                live records here (a write landed after the caller counted) is raised to
                that number.

        Returns:
            ``(id, score)`` pairs by descending score; equal scores by ascending id.
            Scores are float64 sums of exact float32 products (see the module docstring).

        Raises:
            ValueError: ``limit`` is below 1, the query is invalid, or ``idf_records`` is
                negative.
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
        if idf_records is not None:
            n = operator.index(idf_records)
            if n < 0:
                raise ValueError(f"idf_records must be non-negative, got {n}")
            # The caller counts the collection before the search reads the index; a write
            # that lands in between leaves it short by what was written then. The index's
            # own live records are a floor that is never stale.
            n = max(n, snap.n_slots - int(snap.dead_slots().shape[0]))
            if q_terms.shape[0]:
                idf = snap.idf_of(n, q_terms)
                q_weights = (q_weights.astype(np.float32) * idf).astype(np.float64)
        if q_terms.shape[0] == 0 or snap.n_slots == 0:
            return []
        return top_k(
            snap.segments,
            snap.alive_mask(),
            snap.slot_ids,
            q_terms,
            q_weights,
            limit,
            allowed_slots,
        )

    def export_state(self) -> IndexState:
        """The index as it is now, sharing its (immutable) arrays: no copy of postings."""
        snap = self._snap
        return IndexState(snap.slot_ids[: snap.n_slots], snap.alive, snap.segments)

    @classmethod
    def from_state(cls, state: IndexState) -> SparseIndex:
        """An index holding exactly ``state`` (as `export_state` returned it).

        Raises:
            ValueError: The arrays do not describe an index (lengths or slots disagree,
                the bitmap's pad bits are set, or two live slots share an id).
        """
        n_slots = len(state.slot_ids)
        if not _bitmap.is_valid(state.alive, n_slots):
            raise ValueError("alive must be a bitmap of one bit per slot, pad bits 0")
        for seg in state.segments:
            if seg.nnz and (int(seg.slots.min()) < 0 or int(seg.slots.max()) >= n_slots):
                raise ValueError("a segment refers to a slot out of range")
        live = np.flatnonzero(_bitmap.unpack(state.alive, n_slots)).tolist()
        slot_of = {state.slot_ids[s]: s for s in live}
        if len(slot_of) != len(live):
            raise ValueError("two live slots hold the same id")
        index = cls()
        index._slot_of = slot_of
        index._snap = _Snapshot(state.segments, state.alive, list(state.slot_ids), n_slots)
        return index

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
        """Bytes held in numpy arrays (postings, per-term bounds and the alive bitmap).

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


# ---------------------------------------------------------------------- merging


def _merge_tail(segments: tuple[Segment, ...], alive: _U8, n_slots: int) -> tuple[Segment, ...]:
    """Merge the newest segments while the older is not `_MERGE_FACTOR` times larger."""
    segs = list(segments)
    while len(segs) >= 2 and segs[-2].nnz < _MERGE_FACTOR * segs[-1].nnz:
        newer = segs.pop()
        older = segs.pop()
        # Only the slots these two hold, from the older one's first on: a small merge
        # into a large index does not unpack the whole bitmap (51 us at 1M slots).
        first = min((int(seg.slots.min()) for seg in (older, newer) if seg.nnz), default=0)
        mask = _bitmap.unpack_range(alive, first, n_slots)
        merged = merge_postings([older, newer], mask, None, first_slot=first)
        del mask
        if merged.nnz:
            segs.append(merged)
    return tuple(segs)
