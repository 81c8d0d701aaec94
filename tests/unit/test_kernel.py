"""The compiled kernel returns exactly what the numpy path and a naive dot product return."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import pytest

from chroma_sparse_ef import ConfigurationError
from chroma_sparse_ef.hybrid import _kernel, _segments
from chroma_sparse_ef.hybrid._index import SparseIndex

from .kernel_reference import Query, Vector, compiled_and_numpy, naive

pytest.importorskip("numba", reason="the compiled kernel needs the fast extra")

Vectors = dict[str, Vector]


@pytest.fixture(autouse=True)
def compiled() -> Iterator[None]:
    with _kernel.pinned("numba"):
        yield


@pytest.fixture
def many_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small blocks, threads for every query and tiers on short lists: every code path."""
    monkeypatch.setattr(_kernel, "BLOCK_SLOTS", 64)
    monkeypatch.setattr(_kernel, "PARALLEL_MIN_POSTINGS", 0)
    monkeypatch.setattr(_kernel, "THREADS", 3)
    monkeypatch.setattr(_segments, "TIER_MIN_POSTINGS", 16)


def corpus(rng: np.random.Generator, n_docs: int, *, signed: bool, prefix: str = "d") -> Vectors:
    """Zipf-like documents with few distinct weights, so exact ties are common."""
    vocab = 200
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    out: Vectors = {}
    for i in range(n_docs):
        terms = np.unique(rng.choice(vocab, size=int(rng.integers(1, 40)), p=p)).astype(np.int64)
        weights = rng.integers(1, 16, size=terms.shape[0]) / 4
        if signed:
            weights *= rng.choice([-1.0, 1.0], size=terms.shape[0])
        out[f"{prefix}{i:05d}"] = (terms, weights.astype(np.float32))
    return out


def query(rng: np.random.Generator, *, signed: bool) -> Query:
    terms = np.sort(rng.choice(80, size=int(rng.integers(1, 25)), replace=False)).astype(np.int64)
    weights = rng.integers(1, 9, size=terms.shape[0]) / 4
    if signed:
        weights *= rng.choice([-1.0, 1.0], size=terms.shape[0])
    return terms, weights


@pytest.mark.usefixtures("many_blocks")
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kernel_top_k_equals_numpy_and_naive_bit_for_bit(seed: int, signed: bool) -> None:
    """Ids, order and float64 scores are identical, ties broken by id, at every k."""
    rng = np.random.default_rng(seed)
    vectors = corpus(rng, 700, signed=signed)
    index = SparseIndex.build(
        list(vectors), [v[0] for v in vectors.values()], [v[1] for v in vectors.values()]
    )
    for _ in range(25):
        q = query(rng, signed=signed)
        for limit in (1, 3, 10, 100, 5000):
            compiled, numpy_path = compiled_and_numpy(index, q, limit)
            assert compiled == numpy_path
            assert compiled == naive(vectors, q, limit)


@pytest.mark.usefixtures("many_blocks")
@pytest.mark.parametrize("signed", [False, True])
def test_kernel_is_exact_through_upserts_deletes_and_filters(signed: bool) -> None:
    """Several segments, tombstones and an allowed set: still the naive answer."""
    rng = np.random.default_rng(11)
    vectors = corpus(rng, 600, signed=signed)
    index = SparseIndex.build(
        list(vectors), [v[0] for v in vectors.values()], [v[1] for v in vectors.values()]
    )
    for round_ in range(4):
        fresh = corpus(rng, 80, signed=signed, prefix=f"n{round_}-")
        replaced = dict(zip(rng.choice(list(vectors), 40, replace=False).tolist(),
                            corpus(rng, 40, signed=signed).values(), strict=True))  # fmt: skip
        for batch in (fresh, replaced):
            index.upsert(
                list(batch), [v[0] for v in batch.values()], [v[1] for v in batch.values()]
            )
            vectors.update(batch)
        gone = rng.choice(list(vectors), 30, replace=False).tolist()
        index.delete(gone)
        for rid in gone:
            del vectors[rid]
        assert index.segment_count >= 1
        allowed = set(rng.choice(list(vectors), 300, replace=False).tolist()) | {"unknown"}
        for _ in range(10):
            q = query(rng, signed=signed)
            compiled, numpy_path = compiled_and_numpy(index, q, 10)
            assert compiled == numpy_path == naive(vectors, q, 10)
            compiled, numpy_path = compiled_and_numpy(index, q, 7, allowed=allowed)
            subset = {k: v for k, v in vectors.items() if k in allowed}
            assert compiled == numpy_path == naive(subset, q, 7)


def test_kernel_keeps_every_tie_at_the_kth_score_across_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thousands of equal scores split over threads and blocks: the smallest ids win."""
    monkeypatch.setattr(_kernel, "BLOCK_SLOTS", 128)
    monkeypatch.setattr(_kernel, "PARALLEL_MIN_POSTINGS", 0)
    monkeypatch.setattr(_kernel, "THREADS", 4)
    n = 5000
    ids = [f"r{i:05d}" for i in range(n)]
    rng = np.random.default_rng(5)
    order = rng.permutation(n)  # slots in a different order than ids
    index = SparseIndex.build(
        [ids[i] for i in order], [np.array([3, 9])] * n, [np.array([0.5, 2.0], np.float32)] * n
    )
    got = index.search(np.array([3, 9]), np.array([1.0, 1.0]), 25)
    assert got == [(ids[i], 2.5) for i in range(25)]


def test_queries_matching_nothing_or_fewer_than_k_return_what_matches() -> None:
    index = SparseIndex.build(["a", "b"], [np.array([1]), np.array([1, 2])],
                              [np.array([1.0]), np.array([1.0, 3.0])])  # fmt: skip
    assert index.search(np.array([7]), np.array([1.0]), 5) == []
    assert index.search(np.array([2, 1]), np.array([1.0, 1.0]), 5) == [("b", 4.0), ("a", 1.0)]


def test_describe_says_which_path_runs_and_why() -> None:
    assert _kernel.describe().startswith("sparse index: compiled kernel (numba ")
    with _kernel.pinned("numpy") as reason:
        assert "numpy path" in reason
        assert _kernel.KERNEL_ENV_VAR in reason
        assert _kernel.describe() == reason
    assert "compiled kernel" in _kernel.describe()


def test_environment_variable_chooses_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_kernel.KERNEL_ENV_VAR, "numpy")
    with _kernel.pinned("numba"):
        assert "numpy path" in _kernel.select_kernel()
    monkeypatch.setenv(_kernel.KERNEL_ENV_VAR, "gpu")
    with pytest.raises(ConfigurationError, match="'auto', 'numba' or 'numpy'"):
        _kernel.select_kernel()


def test_without_numba_auto_falls_back_and_numba_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """numba unimportable: ``auto`` scores with numpy and says how to get the kernel."""
    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` fail
    monkeypatch.delitem(sys.modules, "chroma_sparse_ef.hybrid._kernel_numba", raising=False)
    monkeypatch.setattr(_kernel, "_decided", {})
    with _kernel.pinned("auto") as reason:
        assert "numba is not installed" in reason
        assert "pip install 'chroma-sparse-ef[fast]'" in reason
        index = SparseIndex.build(["a"], [np.array([1])], [np.array([2.0])])
        assert index.search(np.array([1]), np.array([1.0]), 1) == [("a", 2.0)]
    with pytest.raises(ConfigurationError, match=r"pip install 'chroma-sparse-ef\[fast\]'"):
        _kernel.select_kernel("numba")
