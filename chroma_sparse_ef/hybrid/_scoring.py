"""Which exact path answers a query: direct, compiled, pruned or exhaustive (see `_index`).

All four sum the same float64 products in ascending term order, so they return the same
ids and bit-identical scores; the choice is only about speed, and each threshold below
says where its number comes from. A small ``allowed`` set is scored directly; otherwise
the compiled kernel (`_kernel`, when numba is installed) answers; without it, numpy
prunes where the bounds can pay off and scores exhaustively elsewhere.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ._kernel import kernel_top
from ._pruning import exact_scores, pruned_top, select_top
from ._segments import Segment

__all__ = ["top_k"]

#: Queries reading fewer postings than this go exhaustive: pruning's fixed cost (a pass
#: per tier, exact re-scoring) only pays off on long lists. Terms shorter than
#: `_segments.TIER_MIN_POSTINGS` are one tier anyway.
_PRUNE_MIN_POSTINGS = 50_000
#: Pruning pays off only when few long lists bound the unread part: measured side by side
#: on the synthetic 100k corpus (top 10, unit query weights), pruned against exhaustive:
#: 0.79 vs 1.35 ms with 4 terms, 2.25 vs 2.36 ms with 10 (1.58 vs 3.44 ms with IDF), but
#: 20 vs 14 ms with 30, where the sum of 30 tail bounds proves little.
_PRUNE_MAX_LONG_TERMS = 12
#: An ``allowed`` set this small (in slots) per query term is scored directly by binary
#: search instead of through the postings: ~0.1 us per slot and term against the ~3 ns
#: per posting of a gather (measured on the synthetic 100k corpus).
_DIRECT_MAX_SLOTS = 2048

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]
_U32 = npt.NDArray[np.uint32]
_Bool = npt.NDArray[np.bool_]


def top_k(
    segments: tuple[Segment, ...],
    alive: _Bool,
    slot_ids: list[str],
    q_terms: _U32,
    q_weights: _F64,
    limit: int,
    allowed_slots: _I64 | None,
) -> list[tuple[str, float]]:
    """The exact top ``limit`` live (and allowed) slots, by whichever path is cheapest.

    Args:
        segments: The index's segments.
        alive: Per slot, whether it is live; its length is the slot count.
        slot_ids: The id of each slot.
        q_terms: Sorted distinct query terms.
        q_weights: Their (float32-exact) weights.
        limit: At least 1.
        allowed_slots: If given, only these slots may be returned.
    """
    n_slots = alive.shape[0]
    all_positive = all(seg.all_positive for seg in segments)
    if allowed_slots is not None and allowed_slots.shape[0] <= _DIRECT_MAX_SLOTS:
        cand = np.unique(allowed_slots)
        scores, matched = exact_scores(segments, q_terms, q_weights, cand)
        return select_top(cand[matched], scores[matched], limit, slot_ids)
    positive = all_positive and bool(np.all(q_weights > 0))
    eligible = alive
    if allowed_slots is not None:
        eligible = np.zeros(n_slots, dtype=np.bool_)
        eligible[allowed_slots] = True
        eligible &= alive
    compiled = kernel_top(segments, eligible, q_terms, q_weights, limit, positive)
    if compiled is not None:
        return select_top(*compiled, limit, slot_ids)
    postings, long_terms = _query_cost(segments, q_terms)
    if positive and postings >= _PRUNE_MIN_POSTINGS and long_terms <= _PRUNE_MAX_LONG_TERMS:
        pruned = pruned_top(segments, n_slots, eligible, q_terms, q_weights, limit)
        if pruned is not None:
            return select_top(*pruned, limit, slot_ids)
    return _exhaustive(segments, eligible, slot_ids, q_terms, q_weights, limit, positive)


def _query_cost(segments: tuple[Segment, ...], q_terms: _U32) -> tuple[int, int]:
    """Postings an exhaustive search reads, and how many (segment, term) lists are tiered."""
    total = long_terms = 0
    for seg in segments:
        pos, found = seg.find(q_terms)
        rows = seg.bounds[pos[found]]
        total += int((rows[:, -1] - rows[:, 0]).sum())
        long_terms += int(np.count_nonzero(rows[:, 1] != rows[:, -1]))
    return total, long_terms


def _exhaustive(
    segments: tuple[Segment, ...],
    eligible: _Bool,
    slot_ids: list[str],
    q_terms: _U32,
    q_weights: _F64,
    limit: int,
    positive: bool,
) -> list[tuple[str, float]]:
    n_slots = eligible.shape[0]
    scores = np.zeros(n_slots, dtype=np.float64)
    # With only positive weights a slot is a candidate iff its score is positive (a
    # float64 product of float32 cannot underflow); otherwise track matches explicitly.
    touched = None if positive else np.zeros(n_slots, dtype=np.bool_)
    matched = False
    for seg in segments:
        matched |= seg.accumulate(q_terms, q_weights, scores, touched)
    if not matched:
        return []
    is_candidate = scores > 0 if touched is None else touched
    is_candidate &= eligible
    candidates = np.flatnonzero(is_candidate)
    return select_top(candidates, scores[candidates], limit, slot_ids)
