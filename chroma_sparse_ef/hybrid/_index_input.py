"""What goes into `SparseIndex`: records and queries checked and flattened to CSR arrays.

Kept apart from the index itself: these functions only validate and convert, and raise
`ValueError` naming the record (or the query term) at fault, before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .._sparse_checks import (
    SparseVectorError,
    check_ascending,
    check_index_dtype,
    check_index_range,
    check_value_dtype,
    to_finite_float32,
)

__all__ = ["concat_records", "validate_csr", "validate_query"]


_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]
_U32 = npt.NDArray[np.uint32]


def concat_records(
    ids: Sequence[str],
    indices: Sequence[npt.ArrayLike],
    values: Sequence[npt.ArrayLike],
) -> tuple[_I64, npt.NDArray[np.uint32], _F32]:
    if not len(ids) == len(indices) == len(values):
        raise ValueError(
            f"ids, indices and values must have the same length, got "
            f"{len(ids)}, {len(indices)} and {len(values)}"
        )
    n = len(ids)
    idx_arrays = [np.asarray(a) for a in indices]
    val_arrays = [np.asarray(v) for v in values]
    for k, (a, v) in enumerate(zip(idx_arrays, val_arrays, strict=True)):
        if a.ndim != 1 or v.ndim != 1 or a.shape[0] != v.shape[0]:
            raise ValueError(
                f"record {ids[k]!r}: indices and values must be 1-D and of equal length, "
                f"got shapes {a.shape} and {v.shape}"
            )
    lengths = np.fromiter((a.shape[0] for a in idx_arrays), dtype=np.int64, count=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    nonempty_idx = [a for a in idx_arrays if a.shape[0]]
    nonempty_val = [v for v in val_arrays if v.shape[0]]
    terms = np.concatenate(nonempty_idx) if nonempty_idx else np.empty(0, np.int64)
    weights = np.concatenate(nonempty_val) if nonempty_val else np.empty(0, np.float32)
    return validate_csr(ids, indptr, terms, weights)


def validate_csr(
    ids: Sequence[str],
    indptr_like: npt.ArrayLike,
    indices_like: npt.ArrayLike,
    values_like: npt.ArrayLike,
) -> tuple[_I64, npt.NDArray[np.uint32], _F32]:
    """Check a CSR batch; return it with term ids as uint32, weights as float32, no zeros."""
    n = len(ids)
    if len(set(ids)) != n:
        raise ValueError("ids must be unique within one call")
    indptr = np.asarray(indptr_like)
    indices = np.asarray(indices_like)
    values = np.asarray(values_like)
    if indptr.shape != (n + 1,) or indptr.dtype.kind not in "iu":
        raise ValueError(f"indptr must be {n + 1} integers, got shape {indptr.shape}")
    indptr = indptr.astype(np.int64, copy=False)
    nnz = int(indices.shape[0]) if indices.ndim == 1 else -1
    if (
        indices.ndim != 1
        or values.shape != indices.shape
        or indptr[0] != 0
        or indptr[-1] != nnz
        or bool(np.any(np.diff(indptr) < 0))
    ):
        raise ValueError("indptr, indices and values do not describe a CSR batch")

    def record_at(position: int) -> str:
        return repr(ids[int(np.searchsorted(indptr, position, side="right")) - 1])

    try:
        check_index_dtype(indices, allow_integral_floats=True)
        check_value_dtype(values)
        check_index_range(indices)
        # No copies when the caller's arrays already have the index's dtypes (as
        # `decode_sparse_vectors` returns them): nothing here writes to them.
        terms = indices.astype(np.uint32, copy=False)
        weights = to_finite_float32(values)
        check_ascending(terms, indptr)
    except SparseVectorError as exc:
        if exc.position is None:
            raise ValueError(exc.reason) from None
        raise ValueError(f"record {record_at(exc.position)}: {exc.reason}") from None
    nonzero = weights != 0
    if not bool(np.all(nonzero)):
        kept = np.zeros(nnz + 1, dtype=np.int64)
        np.cumsum(nonzero, out=kept[1:])
        indptr = kept[indptr]
        terms = terms[nonzero]
        weights = weights[nonzero]
    return indptr, terms, weights


def validate_query(indices_like: npt.ArrayLike, values_like: npt.ArrayLike) -> tuple[_U32, _F64]:
    indices = np.asarray(indices_like)
    values = np.asarray(values_like)
    if indices.ndim != 1 or values.shape != indices.shape:
        raise ValueError(
            f"query indices and values must be 1-D and of equal length, "
            f"got shapes {indices.shape} and {values.shape}"
        )
    if indices.shape[0] == 0:
        return np.empty(0, np.uint32), np.empty(0, np.float64)
    try:
        check_index_dtype(indices)
        check_value_dtype(values)
        check_index_range(indices)
        weights = to_finite_float32(values)
    except SparseVectorError as exc:
        raise ValueError(f"query {exc.reason}") from None
    order = np.argsort(indices, kind="stable")
    terms = indices[order].astype(np.uint32)
    if bool(np.any(terms[1:] == terms[:-1])):
        raise ValueError("query term ids must be distinct")
    weights = weights[order]
    nonzero = weights != 0
    return terms[nonzero], weights[nonzero].astype(np.float64)
