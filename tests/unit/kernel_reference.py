"""What the compiled kernel's tests compare against: a naive dot product, and the numpy path."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from chroma_sparse_ef.hybrid import _kernel
from chroma_sparse_ef.hybrid._index import SparseIndex

Vector = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]
Query = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]
Result = list[tuple[str, float]]


def naive(docs: dict[str, Vector], q: Query, limit: int) -> Result:
    """Float64 sums of exact float32 products in ascending term order, by (-score, id).

    A record is a candidate only if it shares a term with a nonzero query weight.
    """
    q_of = dict(zip(q[0].tolist(), np.float32(q[1]).astype(np.float64).tolist(), strict=True))
    out = []
    for rid, (terms, weights) in docs.items():
        total, hit = 0.0, False
        for t, w in zip(terms.tolist(), weights.astype(np.float64).tolist(), strict=True):
            if t in q_of and q_of[t] != 0.0:
                total += w * q_of[t]
                hit = True
        if hit:
            out.append((rid, total))
    out.sort(key=lambda r: (-r[1], r[0]))
    return out[:limit]


def compiled_and_numpy(
    index: SparseIndex, q: Query, limit: int, **kw: Any
) -> tuple[Result, Result]:
    """The same search answered by the path in use (the kernel) and by the numpy path."""
    compiled = index.search(q[0], q[1], limit, **kw)
    with _kernel.pinned("numpy"):
        numpy_path = index.search(q[0], q[1], limit, **kw)
    return compiled, numpy_path
