"""Exact top-k with dynamic pruning over impact tiers, and exact scoring of given slots.

The method is score-at-a-time over impact-ordered postings (Anh & Moffat, "Pruned query
evaluation using pre-computed impacts", SIGIR 2006) with a MaxScore-style proof of
exactness (Turtle & Flood 1995) and exact re-scoring of the survivors, vectorised for
numpy. `_segments` splits each long term's postings into a heavy head (the top eighth by
weight) and a tail. A query reads the heads of all its terms in one pass. Then:

- ``P[d]`` is the sum of the products read for slot ``d``, a lower bound on its score;
- a slot can still gain at most ``R - S[d]``, where ``R = sum_t q_t * c_t`` over the
  query terms, ``c_t`` the largest weight in term ``t``'s tail, and ``S[d]`` the same sum
  over the terms whose head held ``d`` (a record holds a term once, so not in the tail);
- ``theta``, the k-th best ``P`` over distinct eligible slots, is a lower bound on the
  k-th best score.

When ``R < theta`` no slot missing from every head can enter the top k, and no read slot
with ``P + R - S < theta`` can either. The rest are scored exactly (`_verify`: their
products from the heads, binary searches or a marked scan in the tails), summed in
ascending term order like the exhaustive path, so their scores are bit-identical and the
final selection (`select_top`) sees every slot that could rank or tie. Otherwise, or when
exact re-scoring would cost more than reading everything, `pruned_top` gives up and the
caller scores exhaustively. The bounds hold only for positive weights: `SparseIndex`
prunes only then.

Rounding: ``P``, ``S`` and ``R`` are float64 sums of exact products in another order than
the exact score, off by at most ~n_terms * 2**-53 relative; `_SAFETY` (1e-9 relative to
the largest of them) covers that with room to spare.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ._segments import TIERS, Segment

__all__ = ["exact_scores", "pruned_top", "select_top"]

#: Relative slack on every pruning comparison (see the module docstring).
_SAFETY = 1e-9
#: Scoring one candidate exactly costs about as much as reading this many postings (a
#: binary search or a scan per query term; tuned on the synthetic 100k and 1M corpora).
_POSTINGS_PER_CANDIDATE = 64
#: A binary search for one slot in a tier costs about as much as scanning this many
#: postings against a mark array (cache misses against a sequential pass).
_SEARCH_VS_SCAN = 32

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]
_U32 = npt.NDArray[np.uint32]
_Bool = npt.NDArray[np.bool_]


def exact_scores(
    segments: Sequence[Segment], q_terms: _U32, q_weights: _F64, cand: _I64
) -> tuple[_F64, _Bool]:
    """Scores of the sorted slots ``cand``, bit-identical to the exhaustive sum.

    Returns:
        ``(scores, matched)``: float64 sums of the exact float32 products in ascending
        term order, and whether the slot shares any term with the query.
    """
    products = np.zeros((q_terms.shape[0], cand.shape[0]), dtype=np.float64)
    matched = np.zeros(cand.shape[0], dtype=np.bool_)
    for seg in segments:
        pos, found = seg.find(q_terms)
        for qi in np.flatnonzero(found).tolist():
            hit, at = seg.lookup(int(pos[qi]), cand)
            if hit.shape[0]:
                products[qi, hit] = np.multiply(seg.weights[at], q_weights[qi], dtype=np.float64)
                matched[hit] = True
    scores = np.zeros(cand.shape[0], dtype=np.float64)
    # Adding +0.0 where a slot lacks a term leaves its sum unchanged, so this row-by-row
    # sum equals the exhaustive path's per-term additions bit for bit.
    for row in products:
        scores += row
    return scores, matched


def select_top(
    cand: _I64, scores: _F64, limit: int, slot_ids: list[str]
) -> list[tuple[str, float]]:
    """The top ``limit`` of the given slots by score, equal scores by ascending id."""
    n = cand.shape[0]
    if n > limit:
        kth = scores[np.argpartition(scores, n - limit)[n - limit]]
        chosen = np.flatnonzero(scores > kth)
        tied = np.flatnonzero(scores == kth)
        need = limit - chosen.shape[0]
        if tied.shape[0] > need:
            smallest = heapq.nsmallest(need, tied.tolist(), key=lambda i: slot_ids[cand[i]])
            tied = np.asarray(smallest, dtype=np.int64)
        keep = np.concatenate((chosen, tied))
        cand, scores = cand[keep], scores[keep]
    results = [(slot_ids[s], float(v)) for s, v in zip(cand.tolist(), scores.tolist(), strict=True)]
    results.sort(key=lambda r: (-r[1], r[0]))
    return results


@dataclass(frozen=True, slots=True)
class _Read:
    """Postings read in one pass, concatenated over the query's terms."""

    slots: _I64
    entry: _I64  # per posting, its index into the query's (segment, term) entries
    products: _F64


def pruned_top(
    segments: Sequence[Segment],
    n_slots: int,
    eligible: _Bool,
    q_terms: _U32,
    q_weights: _F64,
    limit: int,
) -> tuple[_I64, _F64] | None:
    """Slots that may rank in the top ``limit``, with their exact scores; None to give up.

    Reads the heavy tiers (all but the last) of every query term in one pass. If the
    bounds then prove that the unread postings cannot change the top ``limit``, the few
    slots that may still rank are scored exactly and returned: every eligible slot whose
    exact score could reach the k-th best (ties included), so `select_top` picks exactly
    what the exhaustive path would. Otherwise returns None, having read about an eighth
    of the postings, and the caller scores exhaustively.

    Args:
        segments: All positive weights.
        n_slots: Size of the slot space.
        eligible: Per slot, alive and allowed.
        q_terms: Sorted distinct query terms.
        q_weights: Their weights, all positive.
        limit: k.
    """
    # One entry per (segment, query term) present in it.
    e_seg: list[Segment] = []
    e_row: list[int] = []
    e_q: list[int] = []
    for seg in segments:
        pos, found = seg.find(q_terms)
        for qi in np.flatnonzero(found).tolist():
            e_seg.append(seg)
            e_row.append(int(pos[qi]))
            e_q.append(qi)
    if not e_seg:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    e_qi = np.asarray(e_q, dtype=np.int64)
    e_w = q_weights[e_qi]
    e_bounds = np.stack([seg.bounds[p] for seg, p in zip(e_seg, e_row, strict=True)])
    e_rest = np.stack([seg.rest_max[p] for seg, p in zip(e_seg, e_row, strict=True)])
    level = TIERS - 2  # read tiers 0..level
    unread = int((e_bounds[:, -1] - e_bounds[:, level + 1]).sum())
    read = _read_tiers(e_seg, e_bounds, e_w, level + 1)
    partial = np.zeros(n_slots, dtype=np.float64)
    np.add.at(partial, read.slots, read.products)
    if unread == 0:
        cand = _contenders(read.slots, partial, eligible, limit)
        return cand, _verify(cand, n_slots, [read], e_seg, e_bounds, e_qi, e_w, level, q_terms)

    # A slot can gain at most sum(q_t * c_t) over the terms whose unread tiers may hold
    # it; rest bounds that for slots never read (per segment: a slot lives in one).
    e_c = e_w * e_rest[:, level + 1].astype(np.float64)
    seg_ids = np.asarray([id(seg) for seg in e_seg], dtype=np.int64)
    rest = max(float(e_c[seg_ids == key].sum()) for key in set(seg_ids.tolist()))
    ok = eligible[read.slots]
    slots = read.slots[ok]
    vals = partial[slots]
    theta = _kth_distinct(slots, vals, limit)
    if theta is None:
        return None
    slack = _SAFETY * (theta + rest + float(vals.max()))
    if rest + slack >= theta:
        return None
    credit = np.zeros(n_slots, dtype=np.float64)
    np.add.at(credit, read.slots, e_c[read.entry])
    upper = vals + rest - credit[slots]
    cand = np.unique(slots[upper + slack >= theta])
    if cand.shape[0] * _POSTINGS_PER_CANDIDATE > unread:
        return None  # scoring these one by one would cost more than reading everything
    return cand, _verify(cand, n_slots, [read], e_seg, e_bounds, e_qi, e_w, level, q_terms)


def _kth_distinct(slots: _I64, vals: _F64, limit: int) -> float | None:
    """The ``limit``-th largest value over distinct slots (a slot repeats once per term)."""
    if slots.shape[0] < limit:
        return None
    # A slot appears at most once per query term, so the top limit * terms postings hold
    # at least ``limit`` distinct slots whenever that many exist.
    take = min(slots.shape[0], limit * 64)
    top = np.argpartition(vals, slots.shape[0] - take)[slots.shape[0] - take :]
    uniq, first = np.unique(slots[top], return_index=True)
    if uniq.shape[0] < limit:
        uniq, first = np.unique(slots, return_index=True)
        if uniq.shape[0] < limit:
            return None
        best = vals[first]
    else:
        best = vals[top][first]
    return float(np.partition(best, best.shape[0] - limit)[best.shape[0] - limit])


def _contenders(slots: _I64, partial: _F64, eligible: _Bool, limit: int) -> _I64:
    """With every posting read: eligible slots whose sum may reach the k-th best."""
    seen = np.unique(slots)
    seen = seen[eligible[seen]]
    if seen.shape[0] > limit:
        vals = partial[seen]
        kth = float(np.partition(vals, seen.shape[0] - limit)[seen.shape[0] - limit])
        seen = seen[vals >= kth - _SAFETY * float(vals.max())]
    return seen


def _read_tiers(e_seg: list[Segment], e_bounds: _I64, e_w: _F64, upto: int) -> _Read:
    """Tiers ``0..upto-1`` of every entry, concatenated, with the products they add."""
    starts = e_bounds[:, 0]
    lens = e_bounds[:, upto] - starts
    live = np.flatnonzero(lens)
    slot_parts = []
    weight_parts = []
    for e in live.tolist():
        a, b = int(starts[e]), int(starts[e] + lens[e])
        slot_parts.append(e_seg[e].slots[a:b])
        weight_parts.append(e_seg[e].weights[a:b])
    if not slot_parts:
        return _Read(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))
    entry = np.repeat(live.astype(np.int64), lens[live])
    weights = np.concatenate(weight_parts)
    # int64 once: numpy gathers with int32 indices convert them on every use.
    return _Read(
        np.concatenate(slot_parts).astype(np.int64),
        entry,
        np.multiply(weights, e_w[entry], dtype=np.float64),
    )


def _verify(
    cand: _I64,
    n_slots: int,
    reads: list[_Read],
    e_seg: list[Segment],
    e_bounds: _I64,
    e_qi: _I64,
    e_w: _F64,
    level: int,
    q_terms: _U32,
) -> _F64:
    """Exact scores of the sorted slots ``cand``: read products, then the unread tiers."""
    products = np.zeros((q_terms.shape[0], cand.shape[0]), dtype=np.float64)
    if cand.shape[0] == 0:
        return np.zeros(0, np.float64)
    mark = np.zeros(n_slots, dtype=np.bool_)
    mark[cand] = True
    for r in reads:
        hit = np.flatnonzero(mark[r.slots])
        if hit.shape[0]:
            at = np.searchsorted(cand, r.slots[hit])
            products[e_qi[r.entry[hit]], at] = r.products[hit]
    n_cand = cand.shape[0]
    for e, seg in enumerate(e_seg):
        row = e_bounds[e]
        a, b = int(row[level + 1]), int(row[-1])
        if a == b:
            continue
        tiers = int(np.count_nonzero(row[level + 2 :] > row[level + 1 : -1]))
        w = float(e_w[e])
        if n_cand * tiers * _SEARCH_VS_SCAN < b - a:
            for j in range(level + 1, TIERS):
                ta, tb = int(row[j]), int(row[j + 1])
                if ta == tb:
                    continue
                tier = seg.slots[ta:tb]
                at = np.searchsorted(tier, cand)
                at[at == tb - ta] = 0
                hit = np.flatnonzero(tier[at] == cand)
                products[e_qi[e], hit] = np.multiply(seg.weights[ta + at[hit]], w, dtype=np.float64)
        else:
            slots = seg.slots[a:b]
            hit = np.flatnonzero(mark[slots])
            if hit.shape[0]:
                at = np.searchsorted(cand, slots[hit])
                products[e_qi[e], at] = np.multiply(seg.weights[a + hit], w, dtype=np.float64)
    scores = np.zeros(n_cand, dtype=np.float64)
    # Ascending term order, +0.0 where a slot lacks a term: the exhaustive sum, bit for bit.
    for prow in products:
        scores += prow
    return scores
