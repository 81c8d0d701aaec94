"""Chroma Cloud's BM25 IDF (idf.rs), as a function and applied by `SparseIndex.search`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chroma_sparse_ef.hybrid._idf import bm25_idf
from chroma_sparse_ef.hybrid._index import SparseIndex

# The ten documents of idf.rs's ``sparse_term_generator``: record i (1..10) and its terms.
IDF_RS_DOCS = {
    1: ([0, 1, 2], [2.0, 1.5, 3.0]),
    2: ([0, 1], [2.0, 1.5]),
    3: ([0, 1], [2.0, 1.5]),
    4: ([0], [2.0]),
    5: ([0], [2.0]),
    6: ([3], [1.0]),
    7: ([3], [1.0]),
    8: ([3], [1.0]),
    9: ([3, 4], [1.0, 0.5]),
    10: ([3, 4], [1.0, 0.5]),
}


def idf_rs_index() -> SparseIndex:
    return SparseIndex.build(
        [str(i) for i in IDF_RS_DOCS],
        [v[0] for v in IDF_RS_DOCS.values()],
        [v[1] for v in IDF_RS_DOCS.values()],
    )


def scaled_query(index: SparseIndex, terms: list[int], n: int) -> dict[int, float]:
    """The IDF-scaled weight of each query term (weight 1), read back through search.

    A probe record holding every query term with weight 1 scores each term alone.
    """
    out = {}
    for t in terms:
        got = index.search([t], [1.0], 1, allowed={"probe"}, idf_records=n)
        out[t] = got[0][1]
    return out


def with_probe(index: SparseIndex, terms: list[int]) -> SparseIndex:
    index.upsert(["probe"], [sorted(terms)], [[1.0] * len(terms)])
    return index


def reference_idf(n: int, n_t: int) -> float:
    """Float32 steps, as the Rust code takes them."""
    f = np.float32
    ratio = (f(n) - f(n_t) + f(0.5)) / (f(n_t) + f(0.5))
    return float(np.float32(math.log1p(float(ratio))))


def test_bm25_idf_reproduces_idf_rs_basic_vectors() -> None:
    """idf.rs test_idf_basic_scaling: n=10 and n_t 5, 3, 1, 5, 2."""
    got = bm25_idf(10, np.array([5, 3, 1, 5, 2]))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [0.693, 1.146, 1.992, 0.693, 1.482], atol=0.01)
    assert got[0] == np.float32(math.log(2.0))


def test_bm25_idf_missing_term_and_large_counts() -> None:
    """idf.rs test_idf_missing_terms (n_t = 0 gives ln 22) and float32 rounding of n."""
    assert bm25_idf(10, 0) == np.float32(math.log(22.0))
    n = 2**24 + 1  # not representable in float32: Rust's `as f32` rounds it to 2**24
    assert bm25_idf(n, 3) == bm25_idf(2**24, 3)
    for n, n_t in [(1, 0), (1, 1), (1000, 999), (10**7, 12345), (5, 5)]:
        assert float(bm25_idf(n, n_t)) == reference_idf(n, n_t)


def test_search_applies_idf_basic() -> None:
    """Searching the idf.rs corpus scales each weight by its term's IDF (n counts records).

    The probe record adds one holder per term, so n_t is one more than in idf.rs.
    """
    index = with_probe(idf_rs_index(), [0, 1, 2, 3, 4])
    got = scaled_query(index, [0, 1, 2, 3, 4], n=11)
    for t, n_t in {0: 5, 1: 3, 2: 1, 3: 5, 4: 2}.items():
        assert got[t] == float(bm25_idf(11, n_t + 1))


def test_search_idf_after_deletions() -> None:
    """idf.rs test_idf_with_deletions: deleting records 1 and 4 lowers n and n_t at once."""
    index = idf_rs_index()
    index.delete(["1", "4"])
    expected = {0: 0.944, 1: 1.281, 2: 2.890}
    index = with_probe(index, [0, 1, 2])
    got = scaled_query(index, [0, 1, 2], n=9)
    for t, n_t in {0: 3, 1: 2, 2: 0}.items():
        assert got[t] == float(bm25_idf(9, n_t + 1))
    # Without the probe, the same counts give idf.rs's values.
    for t, n_t in {0: 3, 1: 2, 2: 0}.items():
        assert abs(float(bm25_idf(8, n_t)) - expected[t]) < 0.01


def test_search_idf_after_updates() -> None:
    """idf.rs test_idf_with_updates: record 5 moves to terms 1, 2 and record 6 to term 0."""
    index = idf_rs_index()
    index.upsert(["5", "6"], [[1, 2], [0]], [[2.0, 3.0], [1.5]])
    expected = {0: 0.693, 1: 0.893, 2: 1.482, 3: 0.893}
    counts = {0: 5, 1: 4, 2: 2, 3: 4}
    for t, n_t in counts.items():
        assert abs(float(bm25_idf(10, n_t)) - expected[t]) < 0.01
    index = with_probe(index, [0, 1, 2, 3])
    got = scaled_query(index, [0, 1, 2, 3], n=11)
    for t, n_t in counts.items():
        assert got[t] == float(bm25_idf(11, n_t + 1))


def test_idf_counts_follow_writes_on_the_same_index() -> None:
    """n_t is read from the index as it is now, not cached across writes."""
    index = SparseIndex.build(["a", "b", "p"], [[7], [7], [7]], [[1.0], [1.0], [1.0]])
    before = index.search([7], [1.0], 1, allowed={"p"}, idf_records=3)[0][1]
    assert before == float(bm25_idf(3, 3))
    index.delete(["a"])
    assert index.search([7], [1.0], 1, allowed={"p"}, idf_records=3)[0][1] == float(bm25_idf(3, 2))
    index.upsert(["b"], [[8]], [[1.0]])
    assert index.search([7], [1.0], 1, allowed={"p"}, idf_records=3)[0][1] == float(bm25_idf(3, 1))


def test_idf_scaled_weight_is_rounded_to_float32_before_scoring() -> None:
    """weight * idf is a float32 product, then multiplied exactly with the stored weight."""
    index = SparseIndex.build(["a", "b"], [[1, 2], [2]], [[0.3, 1.7], [1.0]])
    got = dict(index.search([1, 2], [0.9, 1.1], 10, idf_records=5))
    idf = bm25_idf(5, np.array([1, 2]))
    q = np.array([0.9, 1.1], dtype=np.float32) * idf
    assert q.dtype == np.float32
    expected_a = 0.0 + float(q[0]) * float(np.float32(0.3)) + float(q[1]) * float(np.float32(1.7))
    assert got["a"] == expected_a
    assert got["b"] == float(q[1]) * 1.0


def test_a_count_made_before_a_concurrent_write_is_raised_to_the_live_records() -> None:
    """A caller counts n, then a write lands before the search reads the index: the search
    uses the index's live records as n instead of failing (a search beside a writer)."""
    index = SparseIndex.build(["a", "b"], [[1], [1, 2]], [[1.0], [1.0, 1.0]])
    n = 2  # counted first
    index.upsert(["c"], [[1]], [[1.0]])  # another thread's add lands here
    got = dict(index.search([1], [1.0], 10, idf_records=n))
    want = dict(index.search([1], [1.0], 10, idf_records=3))
    assert got == want
    assert float(index.idf([1], n)[0]) == float(bm25_idf(3, np.array([3]))[0])


def test_a_negative_record_count_is_refused() -> None:
    """idf_records below zero is a caller's bug, not a race: it raises."""
    index = SparseIndex.build(["a"], [[1]], [[1.0]])
    with pytest.raises(ValueError, match="idf_records"):
        index.search([1], [1.0], 1, idf_records=-1)


def test_idf_of_overlapping_queries_and_record_counts_equals_a_fresh_computation() -> None:
    """Counts with and without dead slots, new and seen terms, several ``n``: Cloud's IDF."""
    rng = np.random.default_rng(9)
    ids = [f"d{i}" for i in range(300)]
    terms = [np.unique(rng.integers(0, 60, size=8)) for _ in ids]
    index = SparseIndex.build(ids, terms, [np.ones(t.shape[0], np.float32) for t in terms])
    live = set(range(300))
    for n in (300, 301, 5000, 300, 290):
        if n == 290:
            index.delete([f"d{i}" for i in range(0, 300, 7)])
            live -= set(range(0, 300, 7))
        snap = index._snap
        for _ in range(20):
            q = np.unique(rng.integers(0, 70, size=int(rng.integers(1, 12)))).astype(np.uint32)
            n_t = [sum(1 for i in live if t in set(terms[i].tolist())) for t in q.tolist()]
            expected = bm25_idf(n, np.asarray(n_t))
            assert snap.term_counts(q).tolist() == n_t
            assert snap.idf_of(n, q).tobytes() == expected.tobytes()
            weights = rng.random(q.shape[0])
            got = index.search(q, weights, 10, idf_records=n)
            scaled = (weights.astype(np.float32) * expected).astype(np.float64)
            assert got == index.search(q, scaled, 10)
