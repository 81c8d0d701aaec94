"""A compact, versioned text encoding of sparse vectors, for Chroma metadata values.

Embedded Chroma cannot store a `SparseVector` in metadata, but it stores strings. A
vector becomes ``"spv1:" + base64(payload)``, with the payload, little-endian::

    u8   width       2 or 4: bytes per index gap
    u32  nnz         number of nonzeros
    nnz  gaps        index[0], then index[i] - index[i-1] (> 0), as uint16 or uint32
    nnz  f32 values

Gaps fit uint16 for BERT's 30,522-token vocabulary (SPLADE) always, and for BGE-M3's
250,002 tokens in nearly every vector; otherwise the encoder falls back to uint32. A
150-nonzero SPLADE vector takes 1,212 characters, against 1,610 with plain uint32
indices (25% less); varints would save about 10% more at the cost of a scalar decode loop.

Precision: values are stored as float32, so a float64 weight is rounded (relative error
at most 2**-24, about 6e-8). `SparseIndex` also stores float32, so local search scores
the same numbers whether the index was built live or decoded from the collection.

Decoding is strict: anything but a well-formed ``spv1:`` string raises
`CorruptSparseVectorError` saying what is wrong (and, in a batch, which record).
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .._exceptions import CorruptSparseVectorError
from .._sparse_checks import (
    SparseVectorError,
    check_ascending,
    check_index_dtype,
    check_index_range,
    check_value_dtype,
    to_finite_float32,
)

__all__ = [
    "PREFIX",
    "CorruptSparseVectorError",
    "decode_sparse_vector",
    "decode_sparse_vectors",
    "encode_sparse_vector",
    "is_encoded_sparse_vector",
]

#: Format name and version; a future format gets a new prefix and this one stays readable.
PREFIX = "spv1:"
_HEADER = struct.Struct("<BI")
_UINT16_LIMIT = 2**16
_GAP_DTYPES: dict[int, np.dtype[np.unsignedinteger]] = {2: np.dtype("<u2"), 4: np.dtype("<u4")}
_VALUE_DTYPE: np.dtype[np.float32] = np.dtype("<f4")

_U32 = npt.NDArray[np.uint32]
_F32 = npt.NDArray[np.float32]
_I64 = npt.NDArray[np.int64]


def is_encoded_sparse_vector(value: object) -> bool:
    """Whether ``value`` looks like an encoded vector (a string with this format's prefix).

    Args:
        value: Any metadata value.

    Returns:
        True for a string starting with `PREFIX`; nothing beyond the prefix is checked.
    """
    return isinstance(value, str) and value.startswith(PREFIX)


def encode_sparse_vector(indices: npt.ArrayLike, values: npt.ArrayLike) -> str:
    """Encode one sparse vector as an ASCII string.

    Args:
        indices: Strictly ascending integers in ``[0, 2**32)``.
        values: One finite weight per index; stored as float32.

    Returns:
        ``"spv1:"`` followed by base64 (no newlines).

    Raises:
        ValueError: Shapes differ, or the vector breaks a rule of `_sparse_checks`
            (integer indices in ``[0, 2**32)``, strictly ascending; values finite in float32).
    """
    idx = np.asarray(indices)
    vals = np.asarray(values)
    if idx.ndim != 1 or vals.shape != idx.shape:
        raise ValueError(
            f"indices and values must be 1-D and of equal length, "
            f"got shapes {idx.shape} and {vals.shape}"
        )
    nnz = int(idx.shape[0])
    check_index_dtype(idx)
    check_value_dtype(vals)
    check_index_range(idx)
    check_ascending(idx)
    f32 = to_finite_float32(vals).astype(_VALUE_DTYPE, copy=False)
    gaps = np.diff(idx.astype(np.int64), prepend=0)
    width = 2 if nnz == 0 or int(gaps.max()) < _UINT16_LIMIT else 4
    payload = _HEADER.pack(width, nnz) + gaps.astype(_GAP_DTYPES[width]).tobytes() + f32.tobytes()
    return PREFIX + binascii.b2a_base64(payload, newline=False).decode("ascii")


def decode_sparse_vector(encoded: str) -> tuple[_U32, _F32]:
    """Decode one string made by `encode_sparse_vector`.

    Args:
        encoded: The stored string.

    Returns:
        ``(indices, values)``: strictly ascending uint32 indices and float32 values.

    Raises:
        CorruptSparseVectorError: Not a string, wrong prefix or version, bad base64, a
            length that disagrees with the header, repeated or out-of-order indices, or
            a value that is not finite.
    """
    _, gaps, values = _parse(encoded)
    indices = np.cumsum(gaps, dtype=np.int64)
    try:
        _check(gaps, values, np.zeros(1, np.int64), indices)
    except _BadPosition as exc:
        raise CorruptSparseVectorError(exc.reason) from None
    return indices.astype(np.uint32), values.astype(np.float32)


def decode_sparse_vectors(encoded: Sequence[str]) -> tuple[_I64, _U32, _F32]:
    """Decode many strings at once into one CSR batch (the fast path for reopening).

    Args:
        encoded: Stored strings, one per record.

    Returns:
        ``(indptr, indices, values)``: record ``i`` is
        ``indices[indptr[i]:indptr[i + 1]]`` (uint32) and the same slice of ``values``
        (float32); ``indptr`` is int64 of length ``len(encoded) + 1``. It feeds
        `SparseIndex.from_csr` directly.

    Raises:
        CorruptSparseVectorError: As `decode_sparse_vector`; ``record`` says which string.
    """
    n = len(encoded)
    gap_parts: list[npt.NDArray[np.unsignedinteger]] = []
    value_parts: list[npt.NDArray[np.floating]] = []
    indptr = np.zeros(n + 1, dtype=np.int64)
    for k, text in enumerate(encoded):
        try:
            _, gaps, values = _parse(text)
        except CorruptSparseVectorError as exc:
            raise CorruptSparseVectorError(f"record {k}: {exc}", record=k) from exc
        indptr[k + 1] = gaps.shape[0]
        if gaps.shape[0]:
            gap_parts.append(gaps)
            value_parts.append(values)
    np.cumsum(indptr, out=indptr)
    if not gap_parts:
        return indptr, np.empty(0, np.uint32), np.empty(0, np.float32)
    all_gaps = np.concatenate(gap_parts).astype(np.int64)
    all_values = np.concatenate(value_parts).astype(np.float32, copy=False)
    # One cumulative sum for the whole batch, minus each record's running total so far.
    running = np.cumsum(all_gaps)
    lengths = np.diff(indptr)
    starts = indptr[:-1][lengths > 0]
    before = np.where(starts > 0, running[starts - 1], 0)
    indices = running - np.repeat(before, lengths[lengths > 0])
    try:
        _check(all_gaps, all_values, starts, indices)
    except _BadPosition as exc:
        record = int(np.searchsorted(indptr, exc.position, side="right")) - 1
        raise CorruptSparseVectorError(f"record {record}: {exc.reason}", record=record) from None
    return indptr, indices.astype(np.uint32), all_values


class _BadPosition(CorruptSparseVectorError):
    def __init__(self, reason: str, position: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position


def _parse(
    text: object,
) -> tuple[int, npt.NDArray[np.unsignedinteger], npt.NDArray[np.floating]]:
    """Split one string into (width, gaps, values) views, checking everything but order."""
    if not isinstance(text, str):
        raise CorruptSparseVectorError(f"expected a string, got {type(text).__name__}")
    if not text.startswith(PREFIX):
        raise CorruptSparseVectorError(
            f"not an encoded sparse vector: expected prefix {PREFIX!r}, got {text[:16]!r}"
        )
    try:
        raw = binascii.a2b_base64(text[len(PREFIX) :], strict_mode=True)
    except ValueError as exc:  # binascii.Error, and non-ASCII text
        raise CorruptSparseVectorError(f"bad base64: {exc}") from exc
    if len(raw) < _HEADER.size:
        raise CorruptSparseVectorError(f"payload of {len(raw)} bytes is shorter than the header")
    width, nnz = _HEADER.unpack_from(raw)
    if width not in _GAP_DTYPES:
        raise CorruptSparseVectorError(f"unknown index width {width} (expected 2 or 4)")
    expected = _HEADER.size + nnz * (width + _VALUE_DTYPE.itemsize)
    if len(raw) != expected:
        raise CorruptSparseVectorError(
            f"payload is {len(raw)} bytes but the header announces {nnz} nonzeros "
            f"({expected} bytes): truncated or corrupted"
        )
    gaps = np.frombuffer(raw, dtype=_GAP_DTYPES[width], count=nnz, offset=_HEADER.size)
    values = np.frombuffer(raw, dtype=_VALUE_DTYPE, count=nnz, offset=_HEADER.size + nnz * width)
    return width, gaps, values


def _check(
    gaps: npt.NDArray[np.integer],
    values: npt.NDArray[np.floating],
    starts: _I64,
    indices: _I64,
) -> None:
    """Gaps after each record's first must be positive, then `_sparse_checks`' range and finiteness.

    Order is checked on the gaps, where it needs no difference of the indices: a zero gap
    after a record's first entry is an index repeated (unsigned gaps cannot go down).
    """
    if gaps.shape[0] == 0:
        return
    repeated = gaps == 0
    repeated[starts] = False
    bad = np.flatnonzero(repeated)
    if bad.shape[0]:
        raise _BadPosition("indices are repeated or out of order", int(bad[0]))
    try:
        check_index_range(indices)
    except SparseVectorError as exc:
        raise _BadPosition("an index is beyond 2**32 - 1", exc.position or 0) from None
    try:
        to_finite_float32(values)
    except SparseVectorError as exc:
        raise _BadPosition("a value is not finite", exc.position or 0) from None
