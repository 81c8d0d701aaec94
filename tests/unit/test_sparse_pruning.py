"""Pruned and direct search return exactly what exhaustive scoring returns, bit for bit."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from chroma_sparse_ef.hybrid import _index, _kernel, _pruning, _scoring, _segments
from chroma_sparse_ef.hybrid._index import SparseIndex

Query = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]


@pytest.fixture(autouse=True)
def numpy_path() -> Iterator[None]:
    """The numpy paths: the compiled kernel (when installed) would answer every query."""
    with _kernel.pinned("numpy"):
        yield


@pytest.fixture(autouse=True)
def small_tiers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tier every term and prune every query, so small corpora exercise all paths."""
    monkeypatch.setattr(_segments, "TIER_MIN_POSTINGS", 8)
    # Heads of half a list: on a few hundred documents, an eighth rarely proves anything.
    monkeypatch.setattr(_segments, "TIER_FRACTIONS", (1 / 2,))
    monkeypatch.setattr(_index, "_COMPACT_MIN_SLOTS", 64)


def zipf_corpus(
    rng: np.random.Generator, n_docs: int, vocab: int = 300, mean_nnz: int = 25
) -> tuple[list[str], list[npt.NDArray[np.int64]], list[npt.NDArray[np.float32]]]:
    """Documents over a Zipf-like vocabulary, so some terms have long posting lists."""
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    ids, idx, val = [], [], []
    for i in range(n_docs):
        terms = np.unique(rng.choice(vocab, size=int(rng.integers(1, 2 * mean_nnz)), p=p))
        ids.append(f"d{i:05d}")
        idx.append(terms.astype(np.int64))
        # Few distinct weights make exact ties common.
        val.append((rng.integers(1, 40, size=terms.shape[0]) / 8).astype(np.float32))
    return ids, idx, val


def queries(rng: np.random.Generator, n: int, vocab: int = 300) -> list[Query]:
    out = []
    for _ in range(n):
        terms = np.sort(rng.choice(vocab // 3, size=int(rng.integers(1, 12)), replace=False))
        out.append((terms.astype(np.int64), (rng.integers(1, 9, size=terms.shape[0]) / 4)))
    return out


def search_both(
    monkeypatch: pytest.MonkeyPatch,
    index: SparseIndex,
    q: Query,
    limit: int,
    **kw: object,
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(pruned or direct, exhaustive) results for one query."""
    with monkeypatch.context() as m:
        m.setattr(_scoring, "_PRUNE_MIN_POSTINGS", 0)
        fast = index.search(q[0], q[1], limit, **kw)  # type: ignore[arg-type]
    with monkeypatch.context() as m:
        m.setattr(_scoring, "_PRUNE_MIN_POSTINGS", 10**18)
        m.setattr(_scoring, "_DIRECT_MAX_SLOTS", -1)
        slow = index.search(q[0], q[1], limit, **kw)  # type: ignore[arg-type]
    return fast, slow


def count_proofs(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record, per pruned search, whether pruning proved its answer (or gave up)."""
    outcomes: list[bool] = []
    real = _pruning.pruned_top

    def counting(*args: object) -> object:
        got = real(*args)  # type: ignore[arg-type]
        outcomes.append(got is not None)
        return got

    monkeypatch.setattr(_scoring, "pruned_top", counting)
    return outcomes


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_pruned_top_k_equals_exhaustive_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """On random Zipf corpora, pruning returns the same ids, order and float scores, and
    proves many answers itself (no cost limit on exact re-scoring here)."""
    monkeypatch.setattr(_pruning, "_POSTINGS_PER_CANDIDATE", 0)
    proofs = count_proofs(monkeypatch)
    rng = np.random.default_rng(seed)
    ids, idx, val = zipf_corpus(rng, 600)
    index = SparseIndex.build(ids, idx, val)
    assert index._snap.segments[0].tiered
    for q in queries(rng, 40):
        for limit in (1, 3, 10, 50):
            fast, slow = search_both(monkeypatch, index, q, limit)
            assert fast == slow
            assert [s.hex() for _, s in fast] == [s.hex() for _, s in slow]
    assert sum(proofs) >= 20  # the pruned path itself answered, not only its fallback


def test_pruning_is_exact_through_upserts_deletes_and_filters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After interleaved writes (tombstones, several segments) and with filters, IDF on
    and off, pruned and direct search equal exhaustive search."""
    monkeypatch.setattr(_pruning, "_POSTINGS_PER_CANDIDATE", 0)
    proofs = count_proofs(monkeypatch)
    rng = np.random.default_rng(7)
    ids, idx, val = zipf_corpus(rng, 500)
    index = SparseIndex.build(ids, idx, val)
    _, more_idx, more_val = zipf_corpus(rng, 300)
    qs = queries(rng, 12)
    for step in range(300):
        target = f"d{int(rng.integers(0, 700)):05d}"
        if rng.random() < 0.3:
            index.delete([target])
        else:
            index.upsert([target], [more_idx[step]], [more_val[step]])
        if step % 50 == 49:
            live = sorted(index.ids())
            allowed_big = set(live[::2])
            allowed_small = set(live[::40])
            for q in qs:
                for kw in (
                    {},
                    {"allowed": allowed_big},
                    {"allowed": allowed_small},
                    {"idf_records": len(index) + 5},
                    {"allowed": allowed_big, "idf_records": len(index)},
                ):
                    for limit in (1, 10):
                        fast, slow = search_both(monkeypatch, index, q, limit, **kw)
                        assert fast == slow, (step, kw, limit)
    assert index.segment_count > 1 or index.dead_count == 0
    assert sum(proofs) >= 20  # the pruned path itself answered, not only its fallback


def test_negative_weights_fall_back_to_exhaustive_scoring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a negative document or query weight the bounds do not hold: results still equal
    exhaustive search, including candidates scoring zero or less."""
    rng = np.random.default_rng(11)
    ids, idx, val = zipf_corpus(rng, 300)
    val[5] = -val[5]
    index = SparseIndex.build(ids, idx, val)
    for q in queries(rng, 20):
        signed = (q[0], q[1] * np.where(rng.random(q[1].shape[0]) < 0.3, -1, 1))
        for limit in (1, 10, 400):
            fast, slow = search_both(monkeypatch, index, signed, limit)
            assert fast == slow


def test_direct_scoring_of_a_small_allowed_set_matches_exhaustive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A small ``allowed`` set is scored by lookup, with the same candidates and scores."""
    rng = np.random.default_rng(12)
    ids, idx, val = zipf_corpus(rng, 400)
    index = SparseIndex.build(ids, idx, val)
    index.delete(ids[::7])
    allowed = set(ids[::3]) | {"unknown"}
    for q in queries(rng, 20):
        fast, slow = search_both(monkeypatch, index, q, 10, allowed=allowed)
        assert fast == slow
        assert all(i in allowed and i not in ids[::7] for i, _ in fast)
