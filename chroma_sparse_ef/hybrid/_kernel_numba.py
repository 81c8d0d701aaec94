"""numba source of the compiled kernel (see `_kernel`); imported only when numba is wanted.

Every function is compiled in nopython mode without fastmath (IEEE additions in program
order: the exactness argument in `_kernel` depends on it), releases the GIL, and is
cached on disk by numba.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["block_top_k", "jit_enabled", "numba_version"]

_jit = numba.njit(cache=True, nogil=True, boundscheck=False)


def jit_enabled() -> bool:
    """False under ``NUMBA_DISABLE_JIT=1``, where `numba.njit` returns plain Python."""
    return not getattr(numba.config, "DISABLE_JIT", False)


def numba_version() -> str:
    """The numba version doing the compiling."""
    return str(numba.__version__)


@_jit
def _first_at_least(slots, lo, hi, slot):  # type: ignore[no-untyped-def]
    """Position of the first posting in ``slots[lo:hi]`` (ascending) with a slot >= ``slot``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if slots[mid] < slot:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_jit
def _add_block(slots, weights, cur, ends, q_weights, b0, b1, buf, mark, positive):  # type: ignore[no-untyped-def]
    """Add every run's products for slots ``[b0, b1)`` into ``buf``, in run order."""
    for r in range(cur.shape[0]):
        p = cur[r]
        stop = _first_at_least(slots, p, ends[r], b1)
        w = q_weights[r]
        if positive:
            for i in range(p, stop):
                buf[slots[i] - b0] += weights[i] * w
        else:
            for i in range(p, stop):
                j = slots[i] - b0
                buf[j] += weights[i] * w
                mark[j] = True
        cur[r] = stop


@_jit
def _sift_down(heap):  # type: ignore[no-untyped-def]
    """Restore the min-heap after its root was replaced."""
    k = heap.shape[0]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= k:
            return
        if c + 1 < k and heap[c + 1] < heap[c]:
            c += 1
        if heap[c] >= heap[i]:
            return
        heap[c], heap[i] = heap[i], heap[c]
        i = c


@_jit
def _collect_block(buf, mark, eligible, b0, width, heap, out_slots, out_scores, n, positive):  # type: ignore[no-untyped-def]
    """Keep the block's eligible matched slots that reach the running k-th best; clear it."""
    for i in range(width):
        v = buf[i]
        if positive:
            matched = v > 0.0
        else:
            matched = mark[i]
            mark[i] = False
        if not matched:
            continue
        buf[i] = 0.0
        if v >= heap[0] and eligible[b0 + i]:
            if v > heap[0]:
                heap[0] = v
                _sift_down(heap)
            out_slots[n] = b0 + i
            out_scores[n] = v
            n += 1
    return n


@_jit
def _keep_at_least(out_slots, out_scores, n, theta):  # type: ignore[no-untyped-def]
    """Drop the kept slots below ``theta`` (in place); the new count."""
    m = 0
    for j in range(n):
        if out_scores[j] >= theta:
            out_slots[m] = out_slots[j]
            out_scores[m] = out_scores[j]
            m += 1
    return m


@_jit
def block_top_k(slots, weights, starts, ends, q_weights, eligible, lo, hi, k, positive, block):  # type: ignore[no-untyped-def]
    """Eligible matched slots in ``[lo, hi)`` scoring at least the k-th best, and scores.

    Args:
        slots, weights: A segment's postings (int32, float32).
        starts, ends: The query's runs in it, ascending by term; each run ascending by slot.
        q_weights: Per run, its term's query weight (float64 holding a float32).
        eligible: Per slot (global numbering), alive and allowed.
        lo, hi: The slot range to score.
        k: How many results the caller wants.
        positive: All weights positive: a slot matched iff its score is positive.
        block: Slots per block.
    """
    n_runs = starts.shape[0]
    cur = np.empty(n_runs, np.int64)
    for r in range(n_runs):
        cur[r] = _first_at_least(slots, starts[r], ends[r], lo)
    buf = np.zeros(block, np.float64)
    mark = np.zeros(block, np.bool_)
    heap = np.full(k, -np.inf)
    cap = block + 4 * k
    out_slots = np.empty(cap, np.int64)
    out_scores = np.empty(cap, np.float64)
    n = 0
    b0 = lo
    while b0 < hi:
        b1 = min(b0 + block, hi)
        if n + (b1 - b0) > cap:
            n = _keep_at_least(out_slots, out_scores, n, heap[0])
            if n + (b1 - b0) > cap:
                cap = 2 * (n + (b1 - b0))
                grown_slots = np.empty(cap, np.int64)
                grown_scores = np.empty(cap, np.float64)
                grown_slots[:n] = out_slots[:n]
                grown_scores[:n] = out_scores[:n]
                out_slots = grown_slots
                out_scores = grown_scores
        _add_block(slots, weights, cur, ends, q_weights, b0, b1, buf, mark, positive)
        n = _collect_block(
            buf, mark, eligible, b0, b1 - b0, heap, out_slots, out_scores, n, positive
        )
        b0 = b1
    n = _keep_at_least(out_slots, out_scores, n, heap[0])
    return out_slots[:n].copy(), out_scores[:n].copy()
