"""What makes a sparse vector (and a sparse key) valid: one set of bounds, one set of checks.

Used by the wire protocol (`_protocol`), the metadata codec (`hybrid._codec`) and the local
index (`hybrid._index_input`), so all three agree on what a vector is:

- indices are integers in ``[0, MAX_SPARSE_INDEX]``: Chroma stores them as u32 (chromadb's
  Rust ``SparseVector``), so a larger one could never be stored;
- within one vector they are strictly ascending (one weight per index);
- values are real numbers, finite once rounded to float32 (what Chroma and `SparseIndex`
  store).

The array checks raise `SparseVectorError` (a ``ValueError``) with the reason and the flat
position of the first offending entry. Each caller keeps its own public error type and adds
what it knows (the record's id, the response item): the codec re-raises a decoding failure as
`CorruptSparseVectorError`, the protocol as `InvalidResponseError`, the index as ``ValueError``
naming the record.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

import numpy as np
import numpy.typing as npt

from ._exceptions import InvalidInputError

__all__ = [
    "FLOAT32_MAX",
    "INDEX_RANGE_TEXT",
    "MAX_SPARSE_INDEX",
    "SparseVectorError",
    "check_ascending",
    "check_index_dtype",
    "check_index_range",
    "check_sparse_key",
    "check_value_dtype",
    "to_finite_float32",
]

#: Largest sparse index: Chroma stores indices as u32 (rust/types, ``SparseVector``).
MAX_SPARSE_INDEX: Final = 2**32 - 1
#: Largest finite float32: a value beyond it may round to infinity when stored (the exact
#: test is `to_finite_float32`; this bound only screens out the values that need it).
FLOAT32_MAX: Final = float(np.finfo(np.float32).max)
#: How messages write the valid range (half-open, as the earlier messages did).
INDEX_RANGE_TEXT: Final = "[0, 2**32)"
#: Entries compared per step of the order check: bounds its int64 temporaries (16 bytes
#: an entry) to ~64 MiB whatever the batch size.
_ASCENDING_CHUNK: Final = 2**22

_F32 = npt.NDArray[np.float32]


class SparseVectorError(ValueError):
    """A sparse vector breaks one of the rules above.

    Attributes:
        reason: What is wrong, without saying where (callers add the record).
        position: Flat position of the first offending entry in the arrays checked, or
            ``None`` when the problem is the whole array (its dtype).
    """

    def __init__(self, reason: str, position: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position


def check_index_dtype(
    indices: npt.NDArray[np.generic], *, allow_integral_floats: bool = False
) -> None:
    """Refuse non-integer indices (empty arrays pass: their dtype means nothing).

    Args:
        indices: The indices.
        allow_integral_floats: Accept floats that are all whole numbers (``[1.0, 2.0]``),
            which a JSON or Python-list source can produce.

    Raises:
        SparseVectorError: ``"indices must be integers, got dtype ..."``.
    """
    if indices.size == 0 or indices.dtype.kind in "iu":
        return
    if (
        allow_integral_floats
        and indices.dtype.kind == "f"
        and bool(np.all(np.floor(indices) == indices))
    ):
        return
    raise SparseVectorError(f"indices must be integers, got dtype {indices.dtype}")


def check_value_dtype(values: npt.NDArray[np.generic]) -> None:
    """Refuse values that are not real numbers (empty arrays pass).

    Raises:
        SparseVectorError: ``"values must be real numbers, got dtype ..."``.
    """
    if values.size and values.dtype.kind not in "fiu":
        raise SparseVectorError(f"values must be real numbers, got dtype {values.dtype}")


def check_index_range(indices: npt.NDArray[np.integer] | npt.NDArray[np.floating]) -> None:
    """Refuse an index outside ``[0, MAX_SPARSE_INDEX]``.

    Free for uint8/16/32 arrays, which cannot hold one (no temporaries either).

    Raises:
        SparseVectorError: Naming the index, with its position.
    """
    if indices.size == 0 or (indices.dtype.kind == "u" and indices.dtype.itemsize <= 4):
        return
    # numpy scalars, not int(): an integral float array may hold inf.
    if indices.min() >= 0 and indices.max() <= MAX_SPARSE_INDEX:
        return
    bad = int(np.flatnonzero((indices < 0) | (indices > MAX_SPARSE_INDEX))[0])
    raise SparseVectorError(f"index {indices[bad]} is outside {INDEX_RANGE_TEXT}", bad)


def check_ascending(
    indices: npt.NDArray[np.integer], indptr: npt.NDArray[np.int64] | None = None
) -> None:
    """Refuse indices that are not strictly ascending within each vector.

    Args:
        indices: One vector, or a CSR batch's concatenated indices.
        indptr: The batch's record boundaries (``indices[indptr[i]:indptr[i + 1]]`` is
            record ``i``), or ``None`` for one vector. Order across records is free.

    Raises:
        SparseVectorError: ``"indices must be strictly ascending"``, with the position of
            the first index not above its predecessor.
    """
    n = int(indices.shape[0])
    if n < 2:
        return
    if indptr is None and n <= _ASCENDING_CHUNK:
        # One vector (the codec's, per record): a few numpy calls, not the batch's dozen.
        unordered = np.diff(indices.astype(np.int64)) <= 0
        if unordered.any():
            raise SparseVectorError(
                "indices must be strictly ascending", int(unordered.argmax()) + 1
            )
        return
    boundaries = np.empty(0, np.int64) if indptr is None else np.asarray(indptr, np.int64)[1:-1]
    boundaries = boundaries[(boundaries > 0) & (boundaries < n)]
    for a in range(0, n - 1, _ASCENDING_CHUNK):
        b = min(a + _ASCENDING_CHUNK, n - 1)
        unordered = np.diff(indices[a : b + 1].astype(np.int64)) <= 0
        # A record's first index may be anything: it is compared with another record's last.
        inside = boundaries[(boundaries > a) & (boundaries <= b)]
        unordered[inside - 1 - a] = False
        bad = np.flatnonzero(unordered)
        if bad.shape[0]:
            raise SparseVectorError("indices must be strictly ascending", a + int(bad[0]) + 1)


def to_finite_float32(values: npt.NDArray[np.generic]) -> _F32:
    """``values`` as float32 (no copy if they already are), refusing any that is not finite.

    A float64 beyond float32's range rounds to infinity, so it is refused too.

    Raises:
        SparseVectorError: ``"value ... is not finite in float32"``, with its position.
    """
    with np.errstate(over="ignore"):  # overflow becomes inf, refused just below
        weights = values.astype(np.float32, copy=False)
    if weights.size and not bool(np.isfinite(weights).all()):
        bad = int(np.flatnonzero(~np.isfinite(weights))[0])
        raise SparseVectorError(f"value {values[bad]} is not finite in float32", bad)
    return weights


def check_sparse_key(
    sparse_key: object,
    *,
    reserved: Collection[str] = (),
    error: type[ValueError] = InvalidInputError,
) -> str:
    """Refuse a sparse key that is not a metadata key name (not a string, empty, ``#...``).

    ``#`` keys are Chroma's own (``#document``, ``#embedding``, ``#score``).

    Args:
        sparse_key: The key given.
        reserved: Further names the caller keeps for itself.
        error: The exception raised: `InvalidInputError` for a search argument,
            `ConfigurationError` when opening a collection.

    Returns:
        The key.

    Raises:
        ValueError: Of type ``error``, naming ``sparse_key``.
    """
    if not isinstance(sparse_key, str) or not sparse_key or sparse_key.startswith("#"):
        raise error(f"sparse_key must be a metadata key name, got {sparse_key!r}")
    if sparse_key in reserved:
        raise error(f"sparse_key {sparse_key!r} is reserved")
    return sparse_key
