"""Chroma Cloud's BM25 IDF, bit for bit, and the live document frequencies it needs.

On Chroma Cloud a sparse index created with ``SparseVectorIndexConfig(bm25=True)`` scales
each query weight at search time (chroma-core/chroma
``rust/worker/src/execution/operators/idf.rs``, ``Idf::run``)::

    fn scale(n: f32, nt: f32) -> f32 { ((n - nt + 0.5) / (nt + 0.5)).ln_1p() }
    value' = scale(n as f32, nt as f32) * value

with ``n`` the records in the collection and ``n_t`` the records whose sparse vector
holds term ``t``, both kept current through the unflushed log (deletes and updates).
`bm25_idf` repeats each float32 step.

The logarithm. Rust's ``f32::ln_1p`` is the platform libm's ``log1pf``. numpy's float32
``log1p`` is its own SIMD code: measured here over 203k (n, n_t) pairs with n up to 5e7,
it differs from the correctly rounded result by up to 2 ulp (16% of inputs), and over
12.8M float32 inputs spread over [1e-8, 1e9] by up to 2 ulp too. glibc 2.36's
``log1pf`` (Debian 12) differs from the correctly rounded result by 1 ulp on 7% of the
same pairs; newer glibc releases replaced several float functions with CORE-MATH's
correctly rounded ones. We take the correctly rounded value: ``log1p`` in float64, then
one rounding to float32 (wrong only if the float64 result falls within 1 float64 ulp of a
float32 rounding boundary, odds about 2**-29 per input). So the IDF equals Cloud's
exactly where Cloud's libm rounds correctly, and is at most 1 ulp (6e-8 relative) away
where it does not. Chroma's worker image builds on ``debian:stable-slim``
(``rust/Dockerfile``), so which glibc it runs depends on when it was built.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from . import _bitmap
from ._segments import TIERS, Segment

__all__ = ["bm25_idf", "live_term_counts"]

_F32 = npt.NDArray[np.float32]
_I64 = npt.NDArray[np.int64]
_U32 = npt.NDArray[np.uint32]
_U8 = npt.NDArray[np.uint8]

#: A binary search for one dead slot in one tier costs about as much as testing this
#: many postings against the alive bitmap (a guess on the safe side: ~log2 of a tier).
_SEARCH_COST = 24


def bm25_idf(n: npt.ArrayLike, n_t: npt.ArrayLike) -> _F32:
    """Chroma Cloud's BM25 IDF in float32: ``ln(1 + (n - n_t + 0.5) / (n_t + 0.5))``.

    Args:
        n: Records in the collection (with or without a sparse vector).
        n_t: Records whose sparse vector holds the term; broadcast against ``n``.

    Returns:
        The IDF per term, float32, each step rounded to float32 as Cloud's Rust code does.
    """
    n32 = np.asarray(n, dtype=np.float64).astype(np.float32)
    nt32 = np.asarray(n_t, dtype=np.float64).astype(np.float32)
    half = np.float32(0.5)
    ratio = (n32 - nt32 + half) / (nt32 + half)
    return np.asarray(np.log1p(ratio.astype(np.float64)).astype(np.float32), dtype=np.float32)


def live_term_counts(segments: Sequence[Segment], alive: _U8, dead: _I64, q_terms: _U32) -> _I64:
    """How many live records hold each query term.

    Args:
        segments: The index's segments.
        alive: Per slot, whether it is live (a `_bitmap`).
        dead: The dead slots, sorted.
        q_terms: Sorted distinct term ids.

    Returns:
        Per query term, its live postings (a record holds a term at most once).
    """
    counts = np.zeros(q_terms.shape[0], dtype=np.int64)
    for seg in segments:
        pos, found = seg.find(q_terms)
        for qi in np.flatnonzero(found).tolist():
            row = seg.bounds[int(pos[qi])]
            start, end = int(row[0]), int(row[-1])
            total = end - start
            if dead.shape[0] == 0:
                counts[qi] += total
            elif total <= dead.shape[0] * _SEARCH_COST:
                # Only the term's own postings are tested: no mask over every slot.
                counts[qi] += int(np.count_nonzero(_bitmap.test(alive, seg.slots[start:end])))
            else:
                gone = 0
                for j in range(TIERS):
                    a, b = int(row[j]), int(row[j + 1])
                    if a == b:
                        continue
                    tier = seg.slots[a:b]
                    at = np.searchsorted(tier, dead)
                    at[at == b - a] = 0
                    gone += int(np.count_nonzero(tier[at] == dead))
                counts[qi] += total - gone
    return counts
