"""The exact in-memory sparse index, checked against a brute-force reference."""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chroma_sparse_ef.hybrid import _index
from chroma_sparse_ef.hybrid._codec import decode_sparse_vectors, encode_sparse_vector
from chroma_sparse_ef.hybrid._index import SparseIndex

Vector = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]


def reference(
    docs: dict[str, Vector],
    q_idx: npt.ArrayLike,
    q_val: npt.ArrayLike,
    limit: int,
    allowed: set[str] | None = None,
) -> list[tuple[str, float]]:
    """Brute force over dicts: float64 sums of float32 products, ascending term order."""
    query = {
        int(t): float(np.float32(w))
        for t, w in zip(np.asarray(q_idx).tolist(), np.asarray(q_val).tolist(), strict=True)
        if np.float32(w) != 0
    }
    out = []
    for doc_id, (idx, val) in docs.items():
        if allowed is not None and doc_id not in allowed:
            continue
        doc = {int(t): float(np.float32(w)) for t, w in zip(idx, val, strict=True) if w != 0}
        common = sorted(query.keys() & doc.keys())
        if common:
            score = 0.0
            for t in common:
                score += query[t] * doc[t]
            out.append((doc_id, score))
    out.sort(key=lambda r: (-r[1], r[0]))
    return out[:limit]


def random_vector(rng: np.random.Generator, vocab: int = 60, max_nnz: int = 10) -> Vector:
    nnz = int(rng.integers(0, max_nnz + 1))
    idx = np.sort(rng.choice(vocab, size=nnz, replace=False)).astype(np.int64)
    return idx, rng.normal(size=nnz).astype(np.float32)


def random_docs(rng: np.random.Generator, n: int, **kw: int) -> dict[str, Vector]:
    return {f"d{i:04d}": random_vector(rng, **kw) for i in range(n)}


def build(docs: dict[str, Vector]) -> SparseIndex:
    return SparseIndex.build(
        list(docs), [v[0] for v in docs.values()], [v[1] for v in docs.values()]
    )


def assert_matches(index: SparseIndex, docs: dict[str, Vector], rng: np.random.Generator) -> None:
    for _ in range(20):
        q_idx, q_val = random_vector(rng, max_nnz=8)
        limit = int(rng.integers(1, 30))
        assert index.search(q_idx, q_val, limit) == reference(docs, q_idx, q_val, limit)


def test_build_matches_brute_force() -> None:
    """After a bulk build, every query returns exactly the reference top-k and scores."""
    rng = np.random.default_rng(0)
    docs = random_docs(rng, 400)
    index = build(docs)
    assert_matches(index, docs, rng)


def test_from_csr_equals_build() -> None:
    """Loading a decoded CSR batch gives the same answers as build()."""
    rng = np.random.default_rng(1)
    docs = random_docs(rng, 200)
    encoded = [encode_sparse_vector(i, v) for i, v in docs.values()]
    index = SparseIndex.from_csr(list(docs), *decode_sparse_vectors(encoded))
    assert_matches(index, docs, rng)


def test_upserts_after_build_match_brute_force() -> None:
    """New and replaced records written after a build are searched like built ones."""
    rng = np.random.default_rng(2)
    docs = random_docs(rng, 300)
    index = build(docs)
    for step in range(60):
        batch = {f"d{int(rng.integers(0, 400)):04d}": random_vector(rng) for _ in range(3)}
        index.upsert(list(batch), [v[0] for v in batch.values()], [v[1] for v in batch.values()])
        docs.update(batch)
        if step % 10 == 0:
            assert_matches(index, docs, rng)
    assert len(index) == len(docs)
    assert_matches(index, docs, rng)


def test_upsert_replaces_an_existing_record() -> None:
    """Upserting an id drops its old vector entirely."""
    index = SparseIndex.build(["a", "b"], [[1, 2], [2]], [[1.0, 1.0], [1.0]])
    index.upsert(["a"], [[3]], [[5.0]])
    assert index.search([1, 2], [1.0, 1.0], 10) == [("b", 1.0)]
    assert index.search([3], [1.0], 10) == [("a", 5.0)]
    assert len(index) == 2


def test_delete_removes_records_and_ignores_unknown_ids() -> None:
    """Deleted ids never come back; ids not in the index are ignored."""
    index = SparseIndex.build(["a", "b", "c"], [[1], [1], [1]], [[3.0], [2.0], [1.0]])
    index.delete(["b", "zzz", "b"])
    assert index.search([1], [1.0], 10) == [("a", 3.0), ("c", 1.0)]
    assert "b" not in index
    assert sorted(index.ids()) == ["a", "c"]
    index.delete(["nothing"])
    assert len(index) == 2


def test_random_writes_through_merges_and_compaction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Interleaved upserts and deletes stay exact while segments merge and slots compact."""
    monkeypatch.setattr(_index, "_COMPACT_MIN_SLOTS", 16)
    rng = np.random.default_rng(3)
    docs = random_docs(rng, 50)
    index = build(docs)
    compactions = 0
    for step in range(300):
        if rng.random() < 0.3 and docs:
            gone = [str(rng.choice(sorted(docs)))]
            index.delete(gone)
            docs.pop(gone[0])
        else:
            doc_id = f"d{int(rng.integers(0, 80)):04d}"
            vec = random_vector(rng)
            index.upsert([doc_id], [vec[0]], [vec[1]])
            docs[doc_id] = vec
        compactions += index.dead_count == 0
        if step % 25 == 0:
            assert_matches(index, docs, rng)
    assert compactions > 0
    assert sorted(index.ids()) == sorted(docs)
    assert_matches(index, docs, rng)


def test_single_record_upserts_keep_few_segments() -> None:
    """A thousand one-record upserts leave a logarithmic number of segments."""
    rng = np.random.default_rng(4)
    index = SparseIndex()
    for i in range(1000):
        idx, val = random_vector(rng)
        index.upsert([f"d{i}"], [idx], [np.abs(val) + 0.1])
    assert index.segment_count <= 8


def test_compact_reclaims_dead_slots_and_keeps_answers() -> None:
    """compact() leaves one segment, no dead slots, and the same results."""
    rng = np.random.default_rng(5)
    docs = random_docs(rng, 200)
    index = build(docs)
    for i in range(0, 200, 3):
        index.delete([f"d{i:04d}"])
        docs.pop(f"d{i:04d}")
    index.upsert(["new"], [[1, 2]], [[1.0, 1.0]])
    docs["new"] = (np.array([1, 2]), np.array([1.0, 1.0], np.float32))
    assert index.dead_count > 0
    index.compact()
    assert index.dead_count == 0
    assert index.segment_count == 1
    assert_matches(index, docs, rng)


def test_allowed_restricts_results() -> None:
    """Only allowed ids come back; unknown allowed ids are ignored."""
    rng = np.random.default_rng(6)
    docs = random_docs(rng, 300)
    index = build(docs)
    allowed = {d for d in docs if int(d[1:]) % 7 == 0} | {"not-there"}
    for _ in range(20):
        q_idx, q_val = random_vector(rng, max_nnz=8)
        got = index.search(q_idx, q_val, 15, allowed=allowed)
        assert got == reference(docs, q_idx, q_val, 15, allowed)


def test_empty_allowed_returns_nothing() -> None:
    """An empty allowed set (a filter that matched nothing) gives no results."""
    index = SparseIndex.build(["a"], [[1]], [[1.0]])
    assert index.search([1], [1.0], 10, allowed=set()) == []
    assert index.search([1], [1.0], 10, allowed=["x"]) == []


def test_equal_scores_are_ordered_by_ascending_id() -> None:
    """Ties come back in ascending id order, whatever the insertion order."""
    ids = ["c", "a", "e", "b", "d"]
    index = SparseIndex.build(ids, [[1]] * 5, [[2.0]] * 5)
    index.upsert(["aa"], [[1]], [[3.0]])
    assert index.search([1], [1.0], 10) == [
        ("aa", 3.0),
        ("a", 2.0),
        ("b", 2.0),
        ("c", 2.0),
        ("d", 2.0),
        ("e", 2.0),
    ]


def test_ties_at_the_limit_keep_the_smallest_ids() -> None:
    """When ties straddle the limit, the smallest ids among them are kept."""
    ids = [f"id{i:02d}" for i in range(30)][::-1]
    index = SparseIndex.build(["top", *ids], [[1]] * 31, [[9.0]] + [[1.0]] * 30)
    assert index.search([1], [1.0], 4) == [
        ("top", 9.0),
        ("id00", 1.0),
        ("id01", 1.0),
        ("id02", 1.0),
    ]


def test_empty_index_returns_nothing() -> None:
    """Searching an empty index is not an error."""
    index = SparseIndex()
    assert index.search([1, 2], [1.0, 1.0], 5) == []
    assert len(index) == 0
    assert index.ids() == []


def test_query_sharing_no_term_returns_nothing() -> None:
    """Documents sharing no term with the query are not candidates."""
    index = SparseIndex.build(["a", "b"], [[1, 2], [3]], [[1.0, 1.0], [1.0]])
    assert index.search([7, 8], [1.0, 1.0], 5) == []
    assert index.search([], [], 5) == []


def test_limit_larger_than_matches_returns_all_matches() -> None:
    """A limit past the number of candidates returns just the candidates."""
    index = SparseIndex.build(["a", "b", "c"], [[1], [1, 2], [3]], [[1.0], [2.0, 1.0], [1.0]])
    assert index.search([1], [1.0], 1000) == [("b", 2.0), ("a", 1.0)]


@pytest.mark.parametrize("limit", [0, -3])
def test_limit_below_one_is_an_error(limit: int) -> None:
    """limit must be at least 1."""
    index = SparseIndex.build(["a"], [[1]], [[1.0]])
    with pytest.raises(ValueError, match="limit must be at least 1"):
        index.search([1], [1.0], limit)


def test_zero_weights_do_not_make_candidates() -> None:
    """A term with weight 0 on either side does not count as shared."""
    index = SparseIndex.build(["a", "b"], [[1, 2], [2]], [[0.0, 1.0], [1.0]])
    assert index.search([1], [1.0], 5) == []
    assert index.search([1, 2], [1.0, 0.0], 5) == []


def test_negative_scores_of_candidates_are_returned() -> None:
    """With mixed signs, a document sharing a term is a candidate even at score <= 0."""
    index = SparseIndex.build(["a", "b", "c"], [[1], [1, 2], [5]], [[-2.0], [1.0, -1.0], [1.0]])
    assert index.search([1, 2], [1.0, 1.0], 5) == [("b", 0.0), ("a", -2.0)]
    assert index.search([1], [-1.0], 5) == [("a", 2.0), ("b", -1.0)]


def test_query_order_does_not_matter_but_duplicates_are_refused() -> None:
    """Query terms may come unsorted; a repeated term is an error."""
    index = SparseIndex.build(["a"], [[1, 5]], [[1.0, 2.0]])
    assert index.search([5, 1], [1.0, 3.0], 5) == [("a", 5.0)]
    with pytest.raises(ValueError, match="distinct"):
        index.search([1, 1], [1.0, 1.0], 5)


def test_weights_are_stored_as_float32() -> None:
    """A float64 weight scores as its float32 rounding, like a decoded codec string."""
    index = SparseIndex.build(["a"], [[1]], [[0.1]])
    [(_, score)] = index.search([1], [0.1], 1)
    assert score == float(np.float32(0.1)) ** 2


@pytest.mark.parametrize(
    ("indices", "values", "match"),
    [
        ([[2, 1]], [[1.0, 1.0]], "strictly ascending"),
        ([[1, 1]], [[1.0, 1.0]], "strictly ascending"),
        ([[-1]], [[1.0]], r"outside \[0, 2\*\*32\)"),
        ([[2**32]], [[1.0]], r"outside \[0, 2\*\*32\)"),
        ([[1.5]], [[1.0]], "integers"),
        ([[1]], [[float("inf")]], "not finite"),
        ([[1, 2]], [[1.0]], "equal length"),
    ],
)
def test_invalid_vectors_are_refused_and_nothing_is_written(
    indices: list[list[float]], values: list[list[float]], match: str
) -> None:
    """An invalid record raises ValueError naming it, and leaves the index unchanged."""
    index = SparseIndex.build(["keep"], [[1]], [[1.0]])
    with pytest.raises(ValueError, match=match):
        index.upsert(["bad"], indices, values)
    assert index.ids() == ["keep"]
    assert index.search([1, 2], [1.0, 1.0], 5) == [("keep", 1.0)]


def test_error_names_the_offending_record() -> None:
    """The message says which record is invalid."""
    with pytest.raises(ValueError, match="record 'second'"):
        SparseIndex.build(["first", "second"], [[1, 2], [5, 3]], [[1, 1], [1, 1]])


def test_duplicate_ids_in_one_call_are_refused() -> None:
    """An id twice in one upsert is ambiguous, so it is an error."""
    with pytest.raises(ValueError, match="unique"):
        SparseIndex.build(["a", "a"], [[1], [2]], [[1.0], [1.0]])


def test_mismatched_argument_lengths_are_refused() -> None:
    """ids, indices and values must line up."""
    with pytest.raises(ValueError, match="same length"):
        SparseIndex().upsert(["a", "b"], [[1]], [[1.0]])


def test_empty_records_are_held_but_never_match() -> None:
    """A record with no nonzeros is in the index but is never a candidate."""
    index = SparseIndex.build(["empty", "a"], [[], [1]], [[], [1.0]])
    assert "empty" in index
    assert len(index) == 2
    assert index.search([1], [1.0], 5) == [("a", 1.0)]


def test_nbytes_grows_with_content() -> None:
    """nbytes counts the postings arrays."""
    small = SparseIndex.build(["a"], [[1]], [[1.0]])
    large = SparseIndex.build([str(i) for i in range(100)], [[1, 2, 3]] * 100, [[1.0] * 3] * 100)
    assert 0 < small.nbytes < large.nbytes
    assert large.nbytes >= 300 * 8  # an int32 slot and a float32 weight per posting


def test_searches_during_writes_see_consistent_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent searches never fail and always see every record exactly once."""
    monkeypatch.setattr(_index, "_COMPACT_MIN_SLOTS", 16)
    index = SparseIndex.build([f"d{i}" for i in range(200)], [[1, 2]] * 200, [[1.0, 1.0]] * 200)
    stop = threading.Event()
    errors: list[BaseException] = []

    def search() -> None:
        try:
            while not stop.is_set():
                got = index.search([1], [1.0], 1000)
                ids = [i for i, _ in got]
                # Every write keeps exactly 200 records holding term 1.
                assert len(ids) == len(set(ids)) == 200
                index.search([1], [1.0], 10, allowed={"d1", "d2", "d3"})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    readers = [threading.Thread(target=search) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for step in range(300):
            doc = f"d{step % 200}"
            index.upsert([doc], [[1, 3 + step]], [[float(step % 5 + 1), 1.0]])
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors[0]


_ops = st.lists(
    st.tuples(
        st.sampled_from(["upsert", "delete"]),
        st.integers(0, 15),
        st.lists(st.integers(0, 12), unique=True, max_size=5),
        st.lists(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0]), min_size=5, max_size=5),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(_ops, st.lists(st.integers(0, 12), unique=True, min_size=1, max_size=5))
def test_any_write_sequence_matches_brute_force(
    ops: list[tuple[str, int, list[int], list[float]]], query: list[int]
) -> None:
    """Property: after any upserts and deletes, search equals the brute-force reference."""
    index = SparseIndex()
    docs: dict[str, Vector] = {}
    for op, key, terms, weights in ops:
        doc_id = f"k{key:02d}"
        if op == "delete":
            index.delete([doc_id])
            docs.pop(doc_id, None)
        else:
            idx = np.array(sorted(terms), dtype=np.int64)
            val = np.array(weights[: len(terms)], dtype=np.float32)
            index.upsert([doc_id], [idx], [val])
            docs[doc_id] = (idx, val)
    q_val = np.linspace(0.5, 1.5, len(query))
    for limit in (1, 3, 50):
        assert index.search(query, q_val, limit) == reference(docs, query, q_val, limit)


def test_order_check_in_small_chunks_names_the_right_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The chunked order check accepts record boundaries and names the unordered record."""
    from chroma_sparse_ef import _sparse_checks

    monkeypatch.setattr(_sparse_checks, "_ASCENDING_CHUNK", 3)
    ids = [f"r{i}" for i in range(6)]
    rows = [[5, 9], [1, 2, 3], [0], [7, 8], [4, 6, 10], [2]]
    index = SparseIndex.build(ids, rows, [[1.0] * len(r) for r in rows])
    assert len(index) == 6
    bad_rows = [*rows[:4], [4, 10, 6], rows[5]]
    with pytest.raises(ValueError, match=r"'r4'.*strictly ascending"):
        SparseIndex.build(ids, bad_rows, [[1.0] * len(r) for r in bad_rows])
