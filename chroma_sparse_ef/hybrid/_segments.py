"""Immutable postings segments of `SparseIndex`, laid out in impact tiers.

A segment is a CSC-like inverted layout: sorted unique term ids and, per term, its
postings as parallel ``slots`` (int32) and ``weights`` (float32) arrays. Within a term
the postings are split into up to `TIERS` *impact tiers* by weight, heaviest first
(tier 0 holds the top ~1/32 of the term's weights, then up to 1/8, 1/4, 1/2, the rest);
each tier is sorted by slot. ``bounds[i, j]:bounds[i, j + 1]`` is tier ``j`` of term
``i`` and ``rest_max[i, j]`` the largest weight in tiers ``j`` and later, which is what
lets `_pruning` skip the light tiers of a query's terms and still prove its top-k exact.
Only terms with at least `TIER_MIN_POSTINGS` postings are split; shorter ones are one
tier. The split reorders postings in place: no posting is stored twice, so memory stays
at 8 bytes per posting plus 28 bytes per distinct term and segment (4 for the term id, 12
for ``bounds`` in int32, 12 for ``rest_max``). ``bounds`` is int32 whenever the segment's
postings fit (fewer than 2**31; 1M records hold 150M), int64 otherwise: readers take
either.

Scoring over a whole segment (`accumulate`) does not depend on the order inside a term:
every slot gets its terms' products added in ascending term order, which is all the
exactness argument in `_index` needs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["TIERS", "TIER_MIN_POSTINGS", "Segment", "bounds_dtype", "merge_postings"]

#: Cumulative share of a term's postings in the heavy tiers (the rest is the last tier).
#: A search reads the heavy tiers, then proves or gives up. From a simulation on the
#: synthetic 100k corpus (bench/_synthetic.py): with 1/8 read, 23 of 40 top-10 queries
#: were proven with fewer than 3,000 slots left to score exactly; each extra tier costs a
#: binary search per candidate and term when scoring those.
TIER_FRACTIONS = (1 / 8,)
TIERS = len(TIER_FRACTIONS) + 1
#: Terms with fewer postings stay one tier: their whole list costs less to read than the
#: bookkeeping of skipping part of it (a term's tier 0 then has ~128 postings).
TIER_MIN_POSTINGS = 4096
#: Postings sorted per chunk when grouping by term: bounds the temporaries of a build or a
#: merge to ~40 bytes x this (about 80 MiB) whatever the size of the index.
_CHUNK = 2**21
#: Term ids below this are grouped by a counting sort (an int64 count per id: 32 MiB);
#: larger ids (hashed vocabularies) fall back to one stable argsort of all postings.
_COUNTING_LIMIT = 2**22
#: A term sort on uint16 keys uses numpy's radix sort: measured 0.31 s for 14M postings
#: against 1.23 s for the same keys as uint32 (BERT's vocabulary has 30,522 terms).
_UINT16_LIMIT = 2**16
#: Segments with fewer postings than this keep ``bounds`` in int32 (offsets up to
#: 2**31 - 1): 12 bytes per term instead of 24 (0.35 MiB of BERT's 30,522 terms).
_INT32_BOUNDS_LIMIT = 2**31

_F32 = npt.NDArray[np.float32]
#: Postings to group: term ids, weights, and a function giving their slots when needed.
_Chunk = tuple[
    npt.NDArray[np.integer], npt.NDArray[np.float32], Callable[[], npt.NDArray[np.int32]]
]
_F64 = npt.NDArray[np.float64]
_I32 = npt.NDArray[np.int32]
_I64 = npt.NDArray[np.int64]
_U32 = npt.NDArray[np.uint32]
_Bool = npt.NDArray[np.bool_]
#: Per-term tier offsets: int32 or int64 (`bounds_dtype`).
_Bounds = npt.NDArray[np.int32 | np.int64]


def bounds_dtype(nnz: int) -> type[np.int32] | type[np.int64]:
    """The dtype of ``bounds`` for a segment of ``nnz`` postings: int32 when it fits."""
    return np.int32 if nnz < _INT32_BOUNDS_LIMIT else np.int64


@dataclass(frozen=True, slots=True)
class Segment:
    """Immutable postings: term ``terms[i]`` holds ``slots/weights[bounds[i, 0]:bounds[i, -1]]``.

    Attributes:
        terms: Sorted distinct term ids.
        bounds: ``(len(terms), TIERS + 1)`` offsets of each term's tiers; int32 or int64.
        rest_max: ``(len(terms), TIERS + 1)`` largest weight in tiers ``j..``; 0 past the end.
        slots: Posting slots, ascending within each tier.
        weights: Posting weights, nonzero.
        all_positive: Whether every weight is positive (bounds hold only then).
    """

    terms: _U32
    bounds: _Bounds
    rest_max: _F32
    slots: _I32
    weights: _F32
    all_positive: bool

    @property
    def nnz(self) -> int:
        return int(self.slots.shape[0])

    @property
    def nbytes(self) -> int:
        return int(
            self.terms.nbytes
            + self.bounds.nbytes
            + self.rest_max.nbytes
            + self.slots.nbytes
            + self.weights.nbytes
        )

    def term_counts(self) -> _I64:
        """Postings per term (live or not)."""
        return np.asarray(self.bounds[:, -1] - self.bounds[:, 0], dtype=np.int64)

    @classmethod
    def empty(cls) -> Segment:
        return cls(
            terms=np.empty(0, np.uint32),
            bounds=np.zeros((0, TIERS + 1), bounds_dtype(0)),
            rest_max=np.zeros((0, TIERS + 1), np.float32),
            slots=np.empty(0, np.int32),
            weights=np.empty(0, np.float32),
            all_positive=True,
        )

    @classmethod
    def from_records(
        cls,
        base_slot: int,
        parts: Sequence[tuple[_I64, npt.NDArray[np.uint32], _F32]],
    ) -> Segment:
        """A segment of new records, given as CSR parts, numbered from ``base_slot`` on.

        Args:
            base_slot: The first record's slot; later records (across parts) follow.
            parts: ``(indptr, terms, weights)`` CSR batches; terms ascending within a
                record, weights nonzero.
        """
        chunks: list[_Chunk] = []
        first_slot = base_slot
        for indptr, terms, weights in parts:
            lengths = np.diff(indptr)
            for a, b in itertools.pairwise(_record_chunks(indptr).tolist()):
                chunks.append(
                    (terms[a:b], weights[a:b], _record_slots(indptr, lengths, first_slot, a, b))
                )
            first_slot += indptr.shape[0] - 1
        return cls._grouped(chunks, None)

    @classmethod
    def from_postings(
        cls,
        slots: _I32,
        terms: npt.NDArray[np.integer],
        weights: _F32,
        *,
        unsorted_terms: _U32 | None = None,
    ) -> Segment:
        """Group postings by term and split long terms into impact tiers.

        Args:
            slots: Posting slots; within a term, ascending in input order unless the term
                is in ``unsorted_terms``.
            terms: Posting term ids.
            weights: Posting weights, nonzero.
            unsorted_terms: Sorted term ids whose postings may come in any slot order
                (terms that were tiered in a segment being merged).
        """
        nnz = int(terms.shape[0])
        cuts = np.arange(0, nnz + _CHUNK, _CHUNK).clip(max=nnz)
        chunks: list[_Chunk] = [
            (terms[a:b], weights[a:b], _slice_of(slots, a, b))
            for a, b in itertools.pairwise(cuts.tolist())
        ]
        return cls._grouped(chunks, unsorted_terms)

    @classmethod
    def _grouped(cls, chunks: list[_Chunk], unsorted_terms: _U32 | None) -> Segment:
        """A stable counting sort by term over the postings of ``chunks``, in order.

        Temporary memory stays at a chunk's worth: the output (8 bytes per posting) is
        the only full-size allocation, which bounds the peak of a build or a merge.
        """
        chunks = [c for c in chunks if c[0].shape[0]]
        nnz = sum(int(c[0].shape[0]) for c in chunks)
        if nnz == 0:
            return cls.empty()
        n_keys = max(int(c[0].max()) for c in chunks) + 1
        if n_keys > _COUNTING_LIMIT:
            return cls._grouped_by_argsort(
                np.concatenate([c[0] for c in chunks]),
                np.concatenate([c[1] for c in chunks]),
                np.concatenate([c[2]() for c in chunks]),
                unsorted_terms,
            )
        key_type = np.uint16 if n_keys <= _UINT16_LIMIT else np.uint32
        counts = np.zeros(n_keys, dtype=np.int64)
        for terms, _, _ in chunks:
            counts += np.bincount(terms, minlength=n_keys)
        present = np.flatnonzero(counts)
        indptr = np.zeros(present.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts[present], out=indptr[1:])
        cursor = np.zeros(n_keys, dtype=np.int64)
        cursor[present] = indptr[:-1]
        del counts
        out_slots = np.empty(nnz, dtype=np.int32)
        out_weights = np.empty(nnz, dtype=np.float32)
        for terms, weights, slots_of in chunks:
            chunk = terms.astype(key_type, copy=False)
            order = np.argsort(chunk, kind="stable")
            keys = chunk[order].astype(np.int64)
            starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
            runs = np.diff(np.append(starts, keys.shape[0]))
            dest = cursor[keys] + (np.arange(keys.shape[0]) - np.repeat(starts, runs))
            out_slots[dest] = slots_of()[order]
            out_weights[dest] = weights[order]
            cursor[keys[starts]] += runs
        term_ids = present.astype(np.uint32)
        return cls.from_term_major(term_ids, indptr, out_slots, out_weights, unsorted_terms)

    @classmethod
    def _grouped_by_argsort(
        cls,
        terms: npt.NDArray[np.integer],
        weights: _F32,
        slots: _I32,
        unsorted_terms: _U32 | None,
    ) -> Segment:
        """Grouping for term ids too large for a counting sort (a full stable argsort)."""
        nnz = int(terms.shape[0])
        order = np.argsort(terms.astype(np.uint32, copy=False), kind="stable")
        sorted_terms = terms[order]
        starts = np.flatnonzero(sorted_terms[1:] != sorted_terms[:-1]) + 1
        indptr = np.empty(starts.shape[0] + 2, dtype=np.int64)
        indptr[0] = 0
        indptr[1:-1] = starts
        indptr[-1] = nnz
        term_ids = sorted_terms[indptr[:-1]].astype(np.uint32, copy=False)
        out_slots = slots[order].astype(np.int32, copy=False)
        out_weights = weights[order].astype(np.float32, copy=False)
        return cls.from_term_major(term_ids, indptr, out_slots, out_weights, unsorted_terms)

    @classmethod
    def from_term_major(
        cls,
        terms: _U32,
        indptr: _I64,
        slots: _I32,
        weights: _F32,
        unsorted_terms: _U32 | None,
    ) -> Segment:
        """Tier a term-major layout in place (``slots``/``weights`` are reordered)."""
        n_terms = int(terms.shape[0])
        bounds: _Bounds = np.empty((n_terms, TIERS + 1), dtype=bounds_dtype(int(indptr[-1])))
        bounds[:] = indptr[1:, None]
        bounds[:, 0] = indptr[:-1]
        rest_max = np.zeros((n_terms, TIERS + 1), dtype=np.float32)
        if n_terms:
            rest_max[:, 0] = np.maximum.reduceat(weights, indptr[:-1])
        counts = np.diff(indptr)
        todo = counts >= TIER_MIN_POSTINGS
        unsorted = np.zeros(n_terms, dtype=np.bool_)
        if unsorted_terms is not None and unsorted_terms.shape[0]:
            unsorted = np.isin(terms, unsorted_terms)
            todo |= unsorted
        for i in np.flatnonzero(todo).tolist():
            start, end = int(indptr[i]), int(indptr[i + 1])
            _tier_term(slots, weights, start, end, not unsorted[i], bounds[i], rest_max[i])
        return cls(
            terms=terms,
            bounds=bounds,
            rest_max=rest_max,
            slots=slots,
            weights=weights,
            all_positive=bool(np.all(weights > 0)),
        )

    def tiered_terms(self) -> _U32:
        """The terms split into more than one tier (their postings are not slot-sorted)."""
        tiered: _U32 = self.terms[self.bounds[:, 1] != self.bounds[:, -1]]
        return tiered

    def postings(self) -> tuple[_I32, npt.NDArray[np.uint32], _F32]:
        """Expand to (slot, term, weight) triples, grouped by term."""
        return self.slots, np.repeat(self.terms, self.term_counts()), self.weights

    @property
    def tiered(self) -> bool:
        """Whether any term is split into more than one tier."""
        return bool(np.any(self.bounds[:, 1] != self.bounds[:, -1]))

    def find(self, query_terms: _U32) -> tuple[_I64, _Bool]:
        """Positions of the query terms in ``terms`` and which of them are present."""
        if self.terms.shape[0] == 0:
            return np.zeros(query_terms.shape[0], np.int64), np.zeros(query_terms.shape[0], bool)
        pos = np.searchsorted(self.terms, query_terms)
        pos[pos == self.terms.shape[0]] = 0
        return pos.astype(np.int64), self.terms[pos] == query_terms

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
        pos, found = self.find(query_terms)
        if not bool(found.any()):
            return False
        bounds = self.bounds
        for p, w in zip(pos[found].tolist(), query_weights[found].tolist(), strict=True):
            start, end = int(bounds[p, 0]), int(bounds[p, -1])
            slots = self.slots[start:end]
            # Per term, add.at beat concatenating all postings for one np.bincount:
            # 2.3 ms against 3.8 ms for 30 terms over 100k synthetic SPLADE documents.
            # The float64 product of two float32 is exact.
            np.add.at(scores, slots, np.multiply(self.weights[start:end], w, dtype=np.float64))
            if touched is not None:
                touched[slots] = True
        return True

    def lookup(self, p: int, cand: _I64) -> tuple[_I64, _I64]:
        """Where term ``p``'s postings hold the sorted slots ``cand``.

        Returns:
            ``(hit, at)``: indices into ``cand`` that the term holds, and the positions of
            their postings in ``slots``/``weights``.
        """
        hits: list[_I64] = []
        ats: list[_I64] = []
        row = self.bounds[p]
        for j in range(TIERS):
            start, end = int(row[j]), int(row[j + 1])
            if start == end:
                continue
            tier = self.slots[start:end]
            at = np.searchsorted(tier, cand)
            at[at == end - start] = 0
            hit = np.flatnonzero(tier[at] == cand)
            if hit.shape[0]:
                hits.append(hit)
                ats.append(at[hit] + start)
        if not hits:
            empty = np.empty(0, np.int64)
            return empty, empty
        return np.concatenate(hits), np.concatenate(ats)


def _tier_term(
    slots: _I32,
    weights: _F32,
    start: int,
    end: int,
    slot_sorted: bool,
    bounds_row: _Bounds,
    rest_row: _F32,
) -> None:
    """Reorder one term's postings into impact tiers, each ascending by slot."""
    sl = slots[start:end]
    w = weights[start:end]
    if not slot_sorted:
        by_slot = np.argsort(sl, kind="stable")
        sl = sl[by_slot]
        w = w[by_slot]
    n = end - start
    if n < TIER_MIN_POSTINGS:
        # A short list that lost its order in a merge: one tier, sorted by slot again.
        slots[start:end] = sl
        weights[start:end] = w
        return
    # The k-th largest weights cut the tiers; ties at a cut go to the heavier tier.
    kth = [n - max(1, int(n * f)) for f in TIER_FRACTIONS]
    cuts = np.partition(w, kth)[kth]
    tier = np.zeros(n, dtype=np.uint8)
    for c in cuts.tolist():
        tier += w < c
    sizes = np.bincount(tier, minlength=TIERS)
    tier_max = np.zeros(TIERS + 1, dtype=np.float32)
    for j in range(TIERS):
        if sizes[j]:
            tier_max[j] = w[tier == j].max()
    # sl and w may be views of the arrays written here: gather before writing.
    by_tier = np.argsort(tier, kind="stable")
    new_slots = sl[by_tier]
    new_weights = w[by_tier]
    slots[start:end] = new_slots
    weights[start:end] = new_weights
    bounds_row[1:] = start + np.cumsum(sizes)
    rest_row[:] = np.maximum.accumulate(tier_max[::-1])[::-1]


def merge_postings(
    segments: list[Segment],
    alive: _Bool,
    new_slot: _I64 | None,
    *,
    first_slot: int = 0,
) -> Segment:
    """One segment from older-to-newer segments, dropping dead slots.

    Older segments hold smaller slots, so concatenating in age order and sorting stably by
    term keeps slots ascending within a term that no input had tiered; tiered ones are
    re-sorted.

    Args:
        segments: Oldest first.
        alive: Whether slot ``first_slot + i`` is live, for every slot the segments hold.
        new_slot: If given, the slot each kept slot is renumbered to.
        first_slot: The slot ``alive[0]`` stands for.
    """
    slot_list: list[_I32] = []
    term_list: list[npt.NDArray[np.uint32]] = []
    weight_list: list[_F32] = []
    tiered: list[_U32] = []
    for seg in segments:
        tiered.append(seg.tiered_terms())
        slots, terms, weights = seg.postings()
        keep = alive[slots - first_slot] if first_slot else alive[slots]
        kept_slots = slots[keep]
        if new_slot is not None:
            kept_slots = new_slot[kept_slots].astype(np.int32)
        slot_list.append(kept_slots)
        term_list.append(terms[keep])
        weight_list.append(weights[keep])
    if not slot_list:
        return Segment.empty()
    return Segment.from_postings(
        np.concatenate(slot_list),
        np.concatenate(term_list),
        np.concatenate(weight_list),
        unsorted_terms=np.unique(np.concatenate(tiered)),
    )


def _slice_of(slots: _I32, start: int, end: int) -> Callable[[], _I32]:
    return lambda: slots[start:end]


def _record_slots(
    indptr: _I64, lengths: _I64, first_slot: int, start: int, end: int
) -> Callable[[], _I32]:
    """The slots of postings ``start:end`` (cut on record bounds), computed when called."""

    def slots() -> _I32:
        first = int(np.searchsorted(indptr, start, side="right")) - 1
        last = int(np.searchsorted(indptr, end, side="left"))
        ids = np.arange(first_slot + first, first_slot + last, dtype=np.int32)
        return np.repeat(ids, lengths[first:last])

    return slots


def _record_chunks(indptr: _I64) -> _I64:
    """Posting offsets that cut the records into chunks of about `_CHUNK` postings."""
    n_records = indptr.shape[0] - 1
    if n_records == 0:
        return np.zeros(1, dtype=np.int64)
    targets = np.arange(0, int(indptr[-1]), _CHUNK)
    cut_records = np.unique(np.searchsorted(indptr, targets, side="left"))
    cuts = indptr[np.append(cut_records, n_records)]
    return np.unique(np.concatenate(([0], cuts)))
