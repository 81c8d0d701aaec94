"""Segment layout invariants: grouping by term, impact tiers, merges and compaction."""

from __future__ import annotations

import numpy as np
import pytest

from chroma_sparse_ef.hybrid import _index, _segments
from chroma_sparse_ef.hybrid._index import SparseIndex
from chroma_sparse_ef.hybrid._segments import TIERS, Segment


def check_invariants(seg: Segment) -> None:
    """Terms ascending; tiers contiguous, each ascending by slot; rest_max exact."""
    assert np.all(np.diff(seg.terms.astype(np.int64)) > 0)
    assert np.all(np.diff(seg.bounds, axis=1) >= 0)
    if seg.terms.shape[0]:
        assert seg.bounds[0, 0] == 0
        assert seg.bounds[-1, -1] == seg.nnz
        assert np.array_equal(seg.bounds[1:, 0], seg.bounds[:-1, -1])
    for i in range(seg.terms.shape[0]):
        maxima = []
        for j in range(TIERS):
            a, b = int(seg.bounds[i, j]), int(seg.bounds[i, j + 1])
            assert np.all(np.diff(seg.slots[a:b]) > 0), (i, j)
            maxima.append(float(seg.weights[a:b].max()) if b > a else 0.0)
        for j in range(1, TIERS):
            assert seg.rest_max[i, j] == max(maxima[j:])
        if TIERS > 1 and seg.bounds[i, 1] < seg.bounds[i, -1]:
            # The head holds the heaviest weights.
            a, h, b = (int(x) for x in (seg.bounds[i, 0], seg.bounds[i, 1], seg.bounds[i, -1]))
            assert seg.weights[a:h].min() >= seg.weights[h:b].max()


def frequent_corpus(
    rng: np.random.Generator, n: int
) -> tuple[list[str], list[list[int]], list[list[float]]]:
    ids = [f"r{i:04d}" for i in range(n)]
    idx = [sorted({0, 1, *rng.integers(2, 40, size=4).tolist()}) for _ in ids]
    val = [rng.integers(1, 30, size=len(t)).astype(float).tolist() for t in idx]
    return ids, idx, val


def test_long_terms_are_tiered_heaviest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Terms with enough postings get a head of their heaviest weights; others one tier."""
    monkeypatch.setattr(_segments, "TIER_MIN_POSTINGS", 32)
    rng = np.random.default_rng(1)
    index = SparseIndex.build(*frequent_corpus(rng, 300))
    (seg,) = index._snap.segments
    check_invariants(seg)
    assert set(seg.tiered_terms().tolist()) >= {0, 1}
    assert not any(t >= 40 for t in seg.tiered_terms().tolist())


def test_chunked_counting_sort_equals_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Grouping in tiny chunks gives the same arrays as one chunk."""
    monkeypatch.setattr(_segments, "TIER_MIN_POSTINGS", 32)
    rng = np.random.default_rng(2)
    corpus = frequent_corpus(rng, 200)
    whole = SparseIndex.build(*corpus)._snap.segments[0]
    monkeypatch.setattr(_segments, "_CHUNK", 7)
    chunked = SparseIndex.build(*corpus)._snap.segments[0]
    for name in ("terms", "bounds", "rest_max", "slots", "weights"):
        assert np.array_equal(getattr(whole, name), getattr(chunked, name)), name


def test_huge_term_ids_take_the_argsort_path_with_the_same_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Term ids past the counting-sort limit (hashed vocabularies) index and search alike."""
    monkeypatch.setattr(_segments, "TIER_MIN_POSTINGS", 32)
    rng = np.random.default_rng(3)
    ids, idx, val = frequent_corpus(rng, 200)
    shift = 2**31
    big = SparseIndex.build(ids, [[t + shift for t in row] for row in idx], val)
    small = SparseIndex.build(ids, idx, val)
    check_invariants(big._snap.segments[0])
    for q in ([0, 1], [3, 7, 9], [1, 39]):
        w = [1.0] * len(q)
        assert big.search([t + shift for t in q], w, 20) == small.search(q, w, 20)


def test_merges_and_compaction_keep_tiers_sorted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiered term that shrinks in a merge (most holders deleted) is slot-sorted again,
    and every segment keeps its invariants through upserts, merges and compaction."""
    monkeypatch.setattr(_segments, "TIER_MIN_POSTINGS", 32)
    monkeypatch.setattr(_index, "_COMPACT_MIN_SLOTS", 64)
    rng = np.random.default_rng(4)
    ids, idx, val = frequent_corpus(rng, 300)
    index = SparseIndex.build(ids, idx, val)
    live = dict(zip(ids, zip(idx, val, strict=True), strict=True))
    for step in range(400):
        if step % 3 == 0:
            gone = ids[int(rng.integers(0, 300))]
            index.delete([gone])
            live.pop(gone, None)
        else:
            target = ids[int(rng.integers(0, 300))]
            terms = sorted({1, *rng.integers(2, 40, size=3).tolist()})
            weights = rng.integers(1, 30, size=len(terms)).astype(float).tolist()
            index.upsert([target], [terms], [weights])
            live[target] = (terms, weights)
        if step % 40 == 0:
            for seg in index._snap.segments:
                check_invariants(seg)
    index.compact()
    (seg,) = index._snap.segments
    check_invariants(seg)
    for q in ([0], [1], [0, 1, 5], [2, 3, 4, 30]):
        w = np.ones(len(q))
        got = index.search(q, w, 500)
        want = sorted(
            (
                (rid, float(sum(np.float32(v) for t, v in zip(*tv, strict=True) if t in q)))
                for rid, tv in live.items()
                if set(tv[0]) & set(q)
            ),
            key=lambda r: (-r[1], r[0]),
        )
        assert got == want


def test_paged_build_equals_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """from_csr_pages gives the same answers as from_csr, in several segments."""
    monkeypatch.setattr(_segments, "TIER_MIN_POSTINGS", 32)
    monkeypatch.setattr(_index, "_PAGE_SEGMENT_MIN", 50)
    rng = np.random.default_rng(5)
    ids, idx, val = frequent_corpus(rng, 500)
    idx[7], val[7] = [], []  # a record without terms
    whole = SparseIndex.build(ids, idx, val)

    def pages() -> list[tuple[list[str], np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for a in range(0, 500, 37):
            rows = range(a, min(a + 37, 500))
            lengths = [len(idx[i]) for i in rows]
            indptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
            terms = np.array([t for i in rows for t in idx[i]], dtype=np.uint32)
            weights = np.array([w for i in rows for w in val[i]], dtype=np.float32)
            out.append(([ids[i] for i in rows], indptr, terms, weights))
        return out

    paged = SparseIndex.from_csr_pages(pages())
    assert paged.segment_count > 2
    assert sorted(paged.ids()) == sorted(ids)
    for seg in paged._snap.segments:
        check_invariants(seg)
    for q in ([0], [1], [0, 1, 5], [2, 3, 4, 30], [39]):
        w = np.linspace(0.5, 2.0, len(q))
        for limit in (1, 10, 600):
            assert paged.search(q, w, limit) == whole.search(q, w, limit)
    paged.upsert(["r0001"], [[0, 3]], [[2.0, 2.0]])
    whole.upsert(["r0001"], [[0, 3]], [[2.0, 2.0]])
    assert paged.search([0, 3], [1.0, 1.0], 20) == whole.search([0, 3], [1.0, 1.0], 20)


def test_paged_build_refuses_an_id_repeated_across_pages() -> None:
    """The same id on two pages is a ValueError, as a repeat within one batch is."""
    page = (["a"], np.array([0, 1]), np.array([3], dtype=np.uint32), np.array([1.0], np.float32))
    with pytest.raises(ValueError, match="unique"):
        SparseIndex.from_csr_pages([page, page])
