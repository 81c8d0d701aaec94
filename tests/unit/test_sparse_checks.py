"""The one sparse-vector validator: its bounds, and that protocol, codec and index agree."""

from __future__ import annotations

import numpy as np
import pytest

from chroma_sparse_ef import _sparse_checks
from chroma_sparse_ef._exceptions import ConfigurationError, InvalidInputError
from chroma_sparse_ef._sparse_checks import (
    MAX_SPARSE_INDEX,
    SparseVectorError,
    check_ascending,
    check_index_dtype,
    check_index_range,
    check_sparse_key,
    check_value_dtype,
    to_finite_float32,
)
from chroma_sparse_ef.hybrid._codec import decode_sparse_vector, encode_sparse_vector
from chroma_sparse_ef.hybrid._index_input import validate_csr, validate_query


def test_the_largest_index_is_chromas_u32_maximum() -> None:
    """2**32 - 1 is accepted everywhere and 2**32 refused everywhere (Chroma stores u32)."""
    assert np.iinfo(np.uint32).max == MAX_SPARSE_INDEX
    check_index_range(np.array([0, MAX_SPARSE_INDEX], np.int64))
    with pytest.raises(SparseVectorError, match=r"outside \[0, 2\*\*32\)") as info:
        check_index_range(np.array([0, 1, MAX_SPARSE_INDEX + 1], np.int64))
    assert info.value.position == 2


@pytest.mark.parametrize("bad", [-1, MAX_SPARSE_INDEX + 1])
def test_codec_and_index_refuse_the_same_indices(bad: int) -> None:
    """The codec and both index entry points draw the line at the same place."""
    good = MAX_SPARSE_INDEX
    decoded, _ = decode_sparse_vector(encode_sparse_vector([good], [1.0]))
    assert decoded.tolist() == [good]
    validate_csr(["a"], [0, 1], [good], [1.0])
    validate_query([good], [1.0])
    for refuse in (
        lambda: encode_sparse_vector([bad], [1.0]),
        lambda: validate_csr(["a"], [0, 1], [bad], [1.0]),
        lambda: validate_query([bad], [1.0]),
    ):
        with pytest.raises(ValueError, match=r"outside \[0, 2\*\*32\)"):
            refuse()


def test_an_unsigned_32_bit_array_is_in_range_by_its_type() -> None:
    """uint32 cannot hold an out-of-range index, so the range check accepts any."""
    check_index_range(np.array([0, MAX_SPARSE_INDEX], np.uint32))


def test_an_integral_float_infinity_is_refused_not_overflowing() -> None:
    """inf passes the whole-number test (floor(inf) == inf) but is out of range."""
    indices = np.array([1.0, np.inf])
    check_index_dtype(indices, allow_integral_floats=True)
    with pytest.raises(SparseVectorError, match="outside") as info:
        check_index_range(indices)
    assert info.value.position == 1


def test_dtypes_are_refused_with_no_position() -> None:
    """A wrong dtype is about the whole array: no position, the dtype named."""
    with pytest.raises(SparseVectorError, match="integers, got dtype float64") as info:
        check_index_dtype(np.array([1.5]))
    assert info.value.position is None
    with pytest.raises(SparseVectorError, match="integers"):
        check_index_dtype(np.array([1.5]), allow_integral_floats=True)
    with pytest.raises(SparseVectorError, match="real numbers"):
        check_value_dtype(np.array(["x"]))
    check_index_dtype(np.array([], dtype=object))
    check_value_dtype(np.array([], dtype=object))


def test_order_is_strict_within_a_record_and_free_across_records() -> None:
    """A repeat or a descent inside a record is refused at its position; boundaries reset."""
    check_ascending(np.array([5, 9, 1, 2, 0], np.int64), np.array([0, 2, 4, 5]))
    with pytest.raises(SparseVectorError, match="strictly ascending") as info:
        check_ascending(np.array([5, 9, 1, 1, 0], np.int64), np.array([0, 2, 4, 5]))
    assert info.value.position == 3
    with pytest.raises(SparseVectorError) as info:
        check_ascending(np.array([1, 3, 2], np.int64))
    assert info.value.position == 2


def test_order_check_spans_chunk_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    """With tiny chunks, a descent straddling two chunks is still found at its position."""
    monkeypatch.setattr(_sparse_checks, "_ASCENDING_CHUNK", 2)
    check_ascending(np.arange(10, dtype=np.int64))
    with pytest.raises(SparseVectorError) as info:
        check_ascending(np.array([0, 1, 2, 3, 3, 5], np.int64))
    assert info.value.position == 4


def test_values_must_be_finite_once_float32() -> None:
    """1e39 is finite in float64 but overflows float32: refused like nan."""
    out = to_finite_float32(np.array([0.5, 2.0]))
    assert out.dtype == np.float32
    for bad in (np.nan, 1e39):
        with pytest.raises(SparseVectorError, match="not finite in float32") as info:
            to_finite_float32(np.array([0.5, bad]))
        assert info.value.position == 1


def test_float32_values_are_not_copied() -> None:
    """The index's fast path hands over float32 arrays; checking them copies nothing."""
    values = np.array([1.0, 2.0], np.float32)
    assert to_finite_float32(values) is values


@pytest.mark.parametrize("key", ["", "#embedding", None, 3])
def test_a_sparse_key_must_be_a_metadata_key_name(key: object) -> None:
    """Empty, ``#`` (Chroma's own keys) and non-strings are refused, in the caller's type."""
    with pytest.raises(InvalidInputError, match="sparse_key must be a metadata key name"):
        check_sparse_key(key)
    with pytest.raises(ConfigurationError, match="sparse_key must be a metadata key name"):
        check_sparse_key(key, error=ConfigurationError)


def test_a_reserved_sparse_key_is_refused() -> None:
    """A name the caller reserves is refused; any other name is returned as is."""
    assert check_sparse_key("sparse_embedding", reserved=("cfg",)) == "sparse_embedding"
    with pytest.raises(ConfigurationError, match="'cfg' is reserved"):
        check_sparse_key("cfg", reserved=("cfg",), error=ConfigurationError)
