"""Review of the compiled kernel (issue 12): it must answer exactly what the numpy path does.

Differential tests against the numpy path and a naive dot product on adversarial layouts
(segments whose slots interleave, one-record segments, blocks of one slot, thread cuts on
block edges, every slot dead, ties, signed weights, IDF), concurrent searches during
writes, and a huge ``limit``. Forks and numba's failures: tests/integration/
test_kernel_process.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from chroma_sparse_ef.hybrid import _bitmap, _kernel, _scoring, _segments
from chroma_sparse_ef.hybrid._index import IndexState, SparseIndex
from chroma_sparse_ef.hybrid._segments import Segment

from .kernel_reference import Query, Result, Vector, naive
from .kernel_reference import compiled_and_numpy as both

pytest.importorskip("numba", reason="the compiled kernel needs the fast extra")


@pytest.fixture(autouse=True)
def compiled() -> Iterator[None]:
    with _kernel.pinned("numba"):
        yield


@pytest.fixture
def every_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiers on short lists and the kernel for every ``allowed`` set, however small."""
    monkeypatch.setattr(_segments, "TIER_MIN_POSTINGS", 16)
    monkeypatch.setattr(_scoring, "_DIRECT_MAX_SLOTS", 0)


def split(monkeypatch: pytest.MonkeyPatch, block: int, threads: int) -> None:
    monkeypatch.setattr(_kernel, "BLOCK_SLOTS", block)
    monkeypatch.setattr(_kernel, "PARALLEL_MIN_POSTINGS", 0)
    monkeypatch.setattr(_kernel, "THREADS", threads)


def vectors(rng: np.random.Generator, n: int, *, signed: bool, vocab: int = 50) -> list[Vector]:
    """Few distinct weights over a small vocabulary: exact ties are common."""
    out = []
    for _ in range(n):
        terms = np.unique(rng.integers(0, vocab, size=int(rng.integers(1, 20)))).astype(np.int64)
        weights = rng.integers(1, 8, size=terms.shape[0]) / 2
        if signed:
            weights *= rng.choice([-1.0, 1.0], size=terms.shape[0])
        out.append((terms, weights.astype(np.float32)))
    return out


def random_query(rng: np.random.Generator, *, signed: bool, vocab: int = 50) -> Query:
    terms = np.sort(rng.choice(vocab, size=int(rng.integers(1, 15)), replace=False))
    weights = rng.integers(1, 6, size=terms.shape[0]) / 4
    if signed:
        weights *= rng.choice([-1.0, 1.0], size=terms.shape[0])
    return terms.astype(np.int64), weights


def scattered_index(
    rng: np.random.Generator, docs: list[Vector], n_segments: int, alive: npt.NDArray[np.bool_]
) -> SparseIndex:
    """Slots dealt to segments at random: each segment's slots interleave with the others'.

    A real index keeps each segment on a contiguous slot range; a snapshot (`from_state`)
    may hold any disjoint sets, and the kernel scores a segment over its whole range.
    """
    owner = rng.integers(0, n_segments, size=len(docs))
    owner[: min(n_segments, len(docs))] = np.arange(min(n_segments, len(docs)))
    segments = []
    for s in range(n_segments):
        mine = np.flatnonzero(owner == s)
        if mine.shape[0] == 0:
            continue
        slots = np.concatenate([np.full(docs[i][0].shape[0], i, np.int32) for i in mine])
        terms = np.concatenate([docs[i][0] for i in mine]).astype(np.uint32)
        weights = np.concatenate([docs[i][1] for i in mine])
        segments.append(Segment.from_postings(slots, terms, weights))
    ids = [f"d{i:04d}" for i in range(len(docs))]
    return SparseIndex.from_state(IndexState(ids, _bitmap.pack(alive), tuple(segments)))


@pytest.mark.usefixtures("every_path")
@pytest.mark.parametrize(("block", "threads"), [(1, 1), (3, 4), (64, 3), (32_768, 2)])
@pytest.mark.parametrize("signed", [False, True])
def test_interleaved_segments_with_tombstones_and_filters_score_like_numpy(
    monkeypatch: pytest.MonkeyPatch, block: int, threads: int, signed: bool
) -> None:
    """Segments whose slots interleave, dead slots, filters, IDF: the numpy answer, bit for bit."""
    split(monkeypatch, block, threads)
    rng = np.random.default_rng(block * 10 + threads + signed)
    docs = vectors(rng, 300, signed=signed)
    for n_segments in (1, 4, 300):  # 300: mostly one-record segments
        alive = rng.random(300) > 0.3
        index = scattered_index(rng, docs, n_segments, alive)
        if n_segments == 1:  # long terms come in several impact tiers
            assert index.export_state().segments[0].tiered_terms().shape[0] > 0
        live = {f"d{i:04d}": docs[i] for i in np.flatnonzero(alive).tolist()}
        allowed = set(rng.choice(list(live), 100, replace=False).tolist()) | {"d9999"}
        subset = {k: v for k, v in live.items() if k in allowed}
        for _ in range(8):
            q = random_query(rng, signed=signed)
            for limit in (1, 5, 1000):
                got, want = both(index, q, limit)
                assert got == want == naive(live, q, limit)
                got, want = both(index, q, limit, allowed=allowed)
                assert got == want == naive(subset, q, limit)
                got, want = both(index, q, limit, idf_records=400)
                assert got == want


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_thread_cuts_on_block_edges_keep_every_slot_once(
    monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    """Slot ranges that split exactly on block and thread edges lose and repeat no slot."""
    block = 8
    n = block * threads * 4  # linspace cuts land on block edges
    split(monkeypatch, block, threads)
    ids = [f"r{i:04d}" for i in range(n)]
    # Every slot scores differently, in the reverse of its id order: no tie hides a loss.
    index = SparseIndex.build(
        ids, [np.array([1])] * n, [np.array([float(n - i)], np.float32) for i in range(n)]
    )
    got = index.search(np.array([1]), np.array([1.0]), n + 5)
    assert got == [(ids[i], float(n - i)) for i in range(n)]
    assert index.search(np.array([1]), np.array([1.0]), 1) == [(ids[0], float(n))]


def test_every_slot_dead_or_filtered_out_returns_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tombstones on every slot (below the compaction size): no result, on both paths."""
    split(monkeypatch, 16, 3)
    n = 200
    ids = [f"r{i:04d}" for i in range(n)]
    index = SparseIndex.build(ids, [np.array([1, 2])] * n, [np.array([1.0, -1.0], np.float32)] * n)
    index.delete(ids)
    assert index.dead_count == n
    for weights in ([1.0, 1.0], [1.0, -1.0]):
        got, want = both(index, (np.array([1, 2]), np.array(weights)), 10)
        assert got == want == []


def test_all_tied_zero_and_negative_sums_rank_by_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sums of 0.0 and below still count as matches; equal sums rank by ascending id."""
    split(monkeypatch, 16, 3)
    n = 150
    ids = [f"r{i:04d}" for i in range(n)]
    rng = np.random.default_rng(3)
    order = rng.permutation(n)
    index = SparseIndex.build(
        [ids[i] for i in order],
        [np.array([1, 2])] * n,
        [np.array([2.0, -2.0], np.float32)] * n,
    )
    for weights, score in (([1.0, 1.0], 0.0), ([-1.0, 1.0], -4.0), ([1.0, 0.5], 1.0)):
        got, want = both(index, (np.array([1, 2]), np.array(weights)), 7)
        assert got == want == [(ids[i], score) for i in range(7)]


def test_concurrent_searches_during_writes_match_a_snapshot_the_search_could_see(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many threads search (filtered or not) while one upserts and deletes.

    Every answer equals the single-threaded reference of a version published while that
    search ran: the kernel's thread pool is shared and each search reads one snapshot.
    """
    split(monkeypatch, 32, 3)
    monkeypatch.setattr(_segments, "TIER_MIN_POSTINGS", 16)
    monkeypatch.setattr(_scoring, "_DIRECT_MAX_SLOTS", 0)
    rng = np.random.default_rng(21)
    docs = {f"d{i:04d}": v for i, v in enumerate(vectors(rng, 400, signed=False))}
    writes: list[tuple[str, dict[str, Vector] | list[str]]] = []
    for w in range(30):
        if w % 3 == 2:
            writes.append(("delete", rng.choice(sorted(docs), 6, replace=False).tolist()))
        else:
            fresh = vectors(rng, 5, signed=False)
            names = [f"n{w}-{j}" for j in range(3)] + rng.choice(sorted(docs), 2).tolist()
            writes.append(("upsert", dict(zip(names, fresh, strict=True))))
    queries = [random_query(rng, signed=False) for _ in range(4)]
    allowed = set(rng.choice(sorted(docs), 150, replace=False).tolist()) | {"n5-0", "n20-1"}
    # References per version, replayed single-threaded.
    state = dict(docs)
    refs: list[list[tuple[Result, Result]]] = []
    for w in range(len(writes) + 1):
        subset = {k: v for k, v in state.items() if k in allowed}
        refs.append([(naive(state, q, 8), naive(subset, q, 8)) for q in queries])
        if w < len(writes):
            kind, arg = writes[w]
            if kind == "delete":
                assert isinstance(arg, list)
                for rid in arg:
                    state.pop(rid, None)
            else:
                assert isinstance(arg, dict)
                state.update(arg)
    index = SparseIndex.build(list(docs), [v[0] for v in docs.values()],
                              [v[1] for v in docs.values()])  # fmt: skip
    version = [0]
    done = threading.Event()
    failures: list[str] = []

    def writer() -> None:
        for kind, arg in writes:
            if kind == "delete":
                assert isinstance(arg, list)
                index.delete(arg)
            else:
                assert isinstance(arg, dict)
                index.upsert(list(arg), [v[0] for v in arg.values()], [v[1] for v in arg.values()])
            version[0] += 1
        done.set()

    def searcher(seed: int) -> None:
        local = np.random.default_rng(seed)
        rounds = 0
        while not done.is_set() or rounds < 20:
            rounds += 1
            qi = int(local.integers(len(queries)))
            filtered = bool(local.integers(2))
            before = version[0]
            got = index.search(
                queries[qi][0], queries[qi][1], 8, allowed=allowed if filtered else None
            )
            after = version[0]
            # The snapshot read was published at or after `before`, by `after + 1` at most.
            seen = [refs[v][qi][filtered] for v in range(before, min(after + 1, len(writes)) + 1)]
            if got not in seen:
                failures.append(f"query {qi} filtered={filtered} versions {before}..{after}")

    threads = [threading.Thread(target=searcher, args=(s,)) for s in range(6)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    for qi, q in enumerate(queries):
        assert index.search(q[0], q[1], 8) == refs[-1][qi][0]


@pytest.mark.parametrize("limit", [2**62, 2**64])
def test_a_limit_far_above_the_record_count_returns_every_match_like_numpy(limit: int) -> None:
    """``limit`` is only an upper bound (a Knn ``limit`` has no maximum): never an error.

    The kernel sizes its heap and output by ``limit`` (``np.full(k)``): 2**62 is
    ``ValueError: array is too big``, 2**64 ``OverflowError``, and a limit of 10**9
    fills an 8 GB heap per thread part before answering 2 records.
    """
    index = SparseIndex.build(
        ["a", "b"],
        [np.array([1]), np.array([1, 2])],
        [np.array([1.0], np.float32), np.array([1.0, 3.0], np.float32)],
    )
    got, want = both(index, (np.array([1, 2]), np.array([1.0, 1.0])), limit)
    assert want == [("b", 4.0), ("a", 1.0)]
    assert got == want
