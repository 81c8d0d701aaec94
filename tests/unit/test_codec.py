"""The sparse-vector text codec: round trips, size, strict validation."""

from __future__ import annotations

import base64
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chroma_sparse_ef.hybrid._codec import (
    PREFIX,
    CorruptSparseVectorError,
    decode_sparse_vector,
    decode_sparse_vectors,
    encode_sparse_vector,
    is_encoded_sparse_vector,
)


def _raw(width: int, nnz: int, gaps: list[int], values: list[float]) -> str:
    """Hand-build an encoded string, to plant corruption past the base64 layer."""
    gap_dtype = "<u2" if width == 2 else "<u4"
    payload = (
        struct.pack("<BI", width, nnz)
        + np.asarray(gaps, dtype=gap_dtype).tobytes()
        + np.asarray(values, dtype="<f4").tobytes()
    )
    return PREFIX + base64.b64encode(payload).decode("ascii")


_vectors = st.lists(
    st.integers(min_value=0, max_value=2**32 - 1), unique=True, max_size=60
).flatmap(
    lambda idx: st.tuples(
        st.just(sorted(idx)),
        st.lists(
            st.floats(width=32, allow_nan=False, allow_infinity=False),
            min_size=len(idx),
            max_size=len(idx),
        ),
    )
)


@settings(max_examples=200, deadline=None)
@given(_vectors)
def test_round_trip_is_exact_for_float32_values(vector: tuple[list[int], list[float]]) -> None:
    """Any valid vector decodes to the same indices and the same float32 values."""
    indices, values = vector
    encoded = encode_sparse_vector(indices, values)
    got_idx, got_val = decode_sparse_vector(encoded)
    assert got_idx.dtype == np.uint32
    assert got_val.dtype == np.float32
    assert got_idx.tolist() == indices
    np.testing.assert_array_equal(got_val, np.asarray(values, dtype=np.float32))


@settings(max_examples=50, deadline=None)
@given(st.lists(_vectors, max_size=8))
def test_batch_decode_matches_single_decodes(vectors: list[tuple[list[int], list[float]]]) -> None:
    """decode_sparse_vectors returns the CSR concatenation of each single decode."""
    encoded = [encode_sparse_vector(i, v) for i, v in vectors]
    indptr, indices, values = decode_sparse_vectors(encoded)
    assert indptr.tolist()[0] == 0
    assert len(indptr) == len(vectors) + 1
    for k, text in enumerate(encoded):
        one_idx, one_val = decode_sparse_vector(text)
        np.testing.assert_array_equal(indices[indptr[k] : indptr[k + 1]], one_idx)
        np.testing.assert_array_equal(values[indptr[k] : indptr[k + 1]], one_val)


def test_output_is_ascii_with_the_versioned_prefix() -> None:
    """The string is plain ASCII starting with 'spv1:', usable as a metadata value."""
    encoded = encode_sparse_vector([3, 70000], [0.5, -1.25])
    assert encoded.startswith("spv1:")
    assert encoded.isascii()
    assert "\n" not in encoded
    assert is_encoded_sparse_vector(encoded)
    assert not is_encoded_sparse_vector("hello")
    assert not is_encoded_sparse_vector(3)


def test_float64_values_are_rounded_to_float32() -> None:
    """A float64 weight comes back as its nearest float32."""
    _, values = decode_sparse_vector(encode_sparse_vector([1], [0.1]))
    assert values[0] == np.float32(0.1)
    assert float(values[0]) != 0.1


def test_empty_vector_round_trips() -> None:
    """A vector with no nonzeros encodes and decodes to empty arrays."""
    indices, values = decode_sparse_vector(encode_sparse_vector([], []))
    assert indices.shape == (0,)
    assert values.shape == (0,)


def test_splade_sized_vector_uses_two_byte_gaps() -> None:
    """150 nonzeros over BERT's vocabulary take about 1,210 characters, not 1,610."""
    rng = np.random.default_rng(0)
    indices = np.sort(rng.choice(30_522, size=150, replace=False))
    encoded = encode_sparse_vector(indices, rng.random(150))
    assert len(encoded) <= 1_215


def test_large_gaps_fall_back_to_four_byte_gaps() -> None:
    """A gap of 2**16 or more still round-trips (uint32 gaps)."""
    indices = [0, 65_536, 2**32 - 1]
    got, _ = decode_sparse_vector(encode_sparse_vector(indices, [1.0, 2.0, 3.0]))
    assert got.tolist() == indices


@pytest.mark.parametrize(
    ("indices", "values", "match"),
    [
        ([2, 1], [1.0, 1.0], "strictly ascending"),
        ([1, 1], [1.0, 1.0], "strictly ascending"),
        ([-1], [1.0], r"\[0, 2\*\*32\)"),
        ([2**32], [1.0], r"\[0, 2\*\*32\)"),
        ([1.5], [1.0], "integers"),
        ([1], [float("nan")], "finite"),
        ([1], [1e39], "finite"),
        ([1, 2], [1.0], "equal length"),
        ([[1]], [[1.0]], "1-D"),
        ([1], ["x"], "real numbers"),
    ],
)
def test_encode_rejects_invalid_vectors(indices: object, values: object, match: str) -> None:
    """Encoding refuses what decoding would refuse, with a ValueError saying why."""
    with pytest.raises(ValueError, match=match):
        encode_sparse_vector(indices, values)  # type: ignore[arg-type]


_GOOD = encode_sparse_vector([1, 5, 9], [0.5, 1.5, 2.5])


@pytest.mark.parametrize(
    ("encoded", "match"),
    [
        ("", "expected prefix"),
        ("csv1:" + _GOOD[5:], "expected prefix"),
        ("spv2:" + _GOOD[5:], "expected prefix"),
        (_GOOD[5:], "expected prefix"),
        (PREFIX + "!!!!", "bad base64"),
        (PREFIX + "AAAé", "bad base64"),
        (_GOOD[:-1], "bad base64"),
        (_GOOD + "AAAA", "bad base64|bytes"),
        (PREFIX, "shorter than the header"),
        (_raw(3, 0, [], []), "unknown index width 3"),
        (_raw(2, 4, [1, 4, 4], [1.0, 2.0, 3.0]), "announces 4 nonzeros"),
        (_raw(2, 2, [1, 0], [1.0, 2.0]), "repeated or out of order"),
        (_raw(4, 2, [2**32 - 1, 1], [1.0, 2.0]), "beyond 2\\*\\*32 - 1"),
        (_raw(2, 1, [1], [float("inf")]), "not finite"),
    ],
)
def test_decode_rejects_corrupt_strings(encoded: str, match: str) -> None:
    """Every kind of damage raises CorruptSparseVectorError with a message naming it."""
    with pytest.raises(CorruptSparseVectorError, match=match):
        decode_sparse_vector(encoded)
    with pytest.raises(CorruptSparseVectorError, match=match):
        decode_sparse_vectors([_GOOD, encoded])


def test_decode_rejects_non_strings() -> None:
    """A metadata value of another type is corrupt, not a crash."""
    with pytest.raises(CorruptSparseVectorError, match="expected a string, got int"):
        decode_sparse_vector(5)  # type: ignore[arg-type]


def test_corrupt_error_is_a_value_error() -> None:
    """Callers catching ValueError also catch corruption."""
    assert issubclass(CorruptSparseVectorError, ValueError)


def test_every_truncation_is_detected() -> None:
    """Cutting a stored string anywhere never decodes to a different vector."""
    encoded = encode_sparse_vector(list(range(0, 400, 7)), np.linspace(0.1, 5, 58))
    for cut in range(len(encoded)):
        with pytest.raises(CorruptSparseVectorError):
            decode_sparse_vector(encoded[:cut])


def test_batch_error_names_the_record() -> None:
    """A bad string in a batch is reported with its position."""
    bad = _raw(2, 2, [3, 0], [1.0, 1.0])
    with pytest.raises(CorruptSparseVectorError, match=r"^record 2: ") as info:
        decode_sparse_vectors([_GOOD, _GOOD, bad, _GOOD])
    assert info.value.record == 2


def test_batch_decode_of_nothing_is_empty() -> None:
    """No strings give an indptr of [0] and empty arrays."""
    indptr, indices, values = decode_sparse_vectors([])
    assert indptr.tolist() == [0]
    assert indices.shape == values.shape == (0,)


def test_batch_decode_restarts_indices_per_record() -> None:
    """Gap sums do not leak from one record into the next, including after empty ones."""
    encoded = [
        encode_sparse_vector([5, 9], [1, 2]),
        encode_sparse_vector([], []),
        encode_sparse_vector([0, 3], [3, 4]),
        encode_sparse_vector([2**32 - 1], [5]),
    ]
    indptr, indices, values = decode_sparse_vectors(encoded)
    assert indptr.tolist() == [0, 2, 2, 4, 5]
    assert indices.tolist() == [5, 9, 0, 3, 2**32 - 1]
    assert values.tolist() == [1, 2, 3, 4, 5]
