"""Benchmark of the exact sparse index behind hybrid search on embedded Chroma.

Run: ``python bench/bench_sparse_index.py [--max-docs N] [--queries Q]``

Data is SYNTHETIC (see `_synthetic.py`): SPLADE-like documents of ~150 nonzeros and
queries of 30, Zipf-distributed over BERT's 30,522 tokens. Prints, from one run:

(a) scaling: build time, memory, sparse-leg query latency at 10k / 100k / 1M documents;
(b) at 100k documents, side by side on the same weights: this index, bm25s scoring the
    same precomputed matrix, a scipy CSR scan and a numpy full scan, with agreement of
    their top-k checked (and asserted);
(c) reopen: decode 100k codec strings and build the index;
(d) writes after a build: single-record upserts into the 100k index.

Needs the bench extra: ``pip install 'chroma-sparse-ef[bench]'`` (bm25s, scipy).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic import BERT_VOCAB_SIZE, SyntheticCorpus

from chroma_sparse_ef.hybrid._codec import (
    decode_sparse_vectors,
    encode_sparse_vector,
)
from chroma_sparse_ef.hybrid._index import SparseIndex

try:
    import bm25s
    import scipy.sparse as sp
except ImportError as exc:  # pragma: no cover
    raise SystemExit("the benchmark needs: pip install 'chroma-sparse-ef[bench]'") from exc

Query = tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32]]
CSR = tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], npt.NDArray[np.float32]]

#: Relative tolerance when two methods' top-k are compared through their exact scores:
#: bm25s and scipy sum in float32, so near-ties may swap (float32 epsilon is 1.2e-7).
AGREEMENT_RTOL = 1e-5


def rss_bytes() -> int:
    """Resident set size of this process (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.2f} ms"


def latencies(fn: Callable[[Query], object], queries: Sequence[Query]) -> list[float]:
    for q in queries[:5]:  # warm caches and lazy paths
        fn(q)
    out = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        out.append(time.perf_counter() - t0)
    return out


def median_p95(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), float(np.percentile(samples, 95))


def searcher(
    index: SparseIndex, k: int, allowed: set[str] | None = None
) -> Callable[[Query], object]:
    def search(q: Query) -> object:
        return index.search(q[0], q[1], k, allowed=allowed)

    return search


def doc_ids(n: int) -> list[str]:
    return [f"doc-{i:07d}" for i in range(n)]


# ---------------------------------------------------------------------- (a)


def scaling(sizes: list[int], queries: list[Query], corpus: SyntheticCorpus) -> CSR | None:
    print("\n(a) Scaling: build, memory, sparse-leg latency (200 queries unless --queries)")
    print(
        f"{'docs':>9} {'nnz':>12} {'gen':>9} {'build':>9} {'nbytes':>9} {'RSS +':>9} "
        f"{'top10 med':>11} {'top10 p95':>11} {'top100 med':>11} {'top100 p95':>11}"
    )
    kept: CSR | None = None
    for n in sizes:
        gc.collect()
        t0 = time.perf_counter()
        csr = corpus.documents(n)
        gen = time.perf_counter() - t0
        ids = doc_ids(n)
        gc.collect()
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        index = SparseIndex.from_csr(ids, *csr)
        build = time.perf_counter() - t0
        gc.collect()
        rss_delta = rss_bytes() - rss0
        row: list[float] = []
        for k in (10, 100):
            row += median_p95(latencies(searcher(index, k), queries))
        print(
            f"{n:>9,} {csr[1].shape[0]:>12,} {gen:>8.1f}s {build:>8.2f}s "
            f"{index.nbytes / 2**20:>7.0f}Mi {rss_delta / 2**20:>7.0f}Mi "
            + " ".join(f"{ms(x):>11}" for x in row)
        )
        if n == 100_000:
            kept = csr
            allowed = set(ids[::10])
            filt = median_p95(latencies(searcher(index, 10, allowed), queries))
            print(
                f"{'':>9} with allowed= 10,000 ids (a where filter): "
                f"top10 median {ms(filt[0])}, p95 {ms(filt[1])}"
            )
        del index, csr, ids
    return kept


# ---------------------------------------------------------------------- (b)


def side_by_side(csr: CSR, queries: list[Query], k: int) -> None:
    indptr, indices, values = csr
    n = indptr.shape[0] - 1
    ids = doc_ids(n)
    # bm25s weighs each query token 1; give every method the same binary query weights.
    binary = [(q, np.ones_like(w)) for q, w in queries]
    print(
        f"\n(b) {n:,} docs, top {k}, same weights, binary query weights (bm25s has no "
        f"query-term weights), {len(binary)} queries"
    )

    index = SparseIndex.from_csr(ids, *csr)
    doc_major = sp.csr_matrix(
        (values, indices.astype(np.int32), indptr), shape=(n, BERT_VOCAB_SIZE)
    )
    term_major = doc_major.tocsc()
    retriever = bm25s.BM25()
    retriever.scores = {
        "data": term_major.data,
        "indices": term_major.indices,
        "indptr": term_major.indptr,
        "num_docs": n,
    }
    retriever.nonoccurrence_array = None
    retriever.vocab_dict = {t: t for t in range(BERT_VOCAB_SIZE)}
    retriever.unique_token_ids_set = set(range(BERT_VOCAB_SIZE))
    doc_of_posting = np.repeat(np.arange(n), np.diff(indptr))

    def ours(q: Query) -> list[int]:
        return [int(i[4:]) for i, _ in index.search(q[0], q[1], k)]

    def with_bm25s(q: Query) -> list[int]:
        docs, _ = retriever.retrieve(
            [q[0].tolist()], k=k, show_progress=False, n_threads=0, backend_selection="numpy"
        )
        return [int(d) for d in docs[0]]

    def dense_query(q: Query) -> npt.NDArray[np.float32]:
        dense = np.zeros(BERT_VOCAB_SIZE, dtype=np.float32)
        dense[q[0]] = q[1]
        return dense

    def top(scores: npt.NDArray[np.floating] | npt.NDArray[np.float64]) -> list[int]:
        part = np.argpartition(scores, -k)[-k:]
        best: list[int] = part[np.argsort(-scores[part], kind="stable")].tolist()
        return best

    def scipy_scan(q: Query) -> list[int]:
        return top(doc_major @ dense_query(q))

    def numpy_scan(q: Query) -> list[int]:
        contrib = dense_query(q)[indices] * values
        return top(np.bincount(doc_of_posting, contrib, minlength=n).astype(np.float64, copy=False))

    def exact(q: Query, docs: list[int]) -> npt.NDArray[np.float64]:
        dense = dense_query(q).astype(np.float64)
        out = [
            float(dense[indices[indptr[d] : indptr[d + 1]]] @ values[indptr[d] : indptr[d + 1]])
            for d in docs
        ]
        return np.sort(np.asarray(out))[::-1]

    methods = {
        "this index (numpy)": ours,
        "bm25s 0.3 retrieve": with_bm25s,
        "scipy CSR scan": scipy_scan,
        "numpy full scan": numpy_scan,
    }
    reference = [ours(q) for q in binary]
    base_median = 0.0
    print(f"{'method':<22} {'median':>11} {'p95':>11} {'vs ours':>8}  top-k agreement")
    for name, fn in methods.items():
        med, p95 = median_p95(latencies(fn, binary))
        if name.startswith("this"):
            base_median = med
        same_ids = 0
        for q, ref in zip(binary, reference, strict=True):
            got = fn(q)
            same_ids += got == ref
            # Different ids are fine only where scores tie within float32 rounding.
            ok = np.allclose(exact(q, got), exact(q, ref), rtol=AGREEMENT_RTOL, atol=0)
            assert ok, f"{name} disagrees with the index: {got} vs {ref}"
        print(
            f"{name:<22} {ms(med):>11} {ms(p95):>11} {med / base_median:>7.1f}x  "
            f"identical ids {same_ids}/{len(binary)}, same scores {len(binary)}/{len(binary)}"
        )
    # The weighted queries too, against scipy (which can weigh query terms).
    for q in queries:
        assert np.allclose(
            exact(q, [int(i[4:]) for i, _ in index.search(q[0], q[1], k)]),
            exact(q, scipy_scan(q)),
            rtol=AGREEMENT_RTOL,
            atol=0,
        )
    print(f"weighted queries: this index agrees with the scipy scan on all {len(queries)}")


# ---------------------------------------------------------------------- (c)


def reopen(csr: CSR) -> None:
    indptr, indices, values = csr
    n = indptr.shape[0] - 1
    ids = doc_ids(n)
    t0 = time.perf_counter()
    encoded = [
        encode_sparse_vector(indices[indptr[i] : indptr[i + 1]], values[indptr[i] : indptr[i + 1]])
        for i in range(n)
    ]
    encode = time.perf_counter() - t0
    chars = sum(map(len, encoded))
    gc.collect()
    t0 = time.perf_counter()
    decoded = decode_sparse_vectors(encoded)
    decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = SparseIndex.from_csr(ids, *decoded)
    build = time.perf_counter() - t0
    assert len(index) == n
    assert np.array_equal(decoded[1], indices)
    assert np.array_equal(decoded[2], values)
    print(f"\n(c) Reopen {n:,} records from codec strings (Chroma's get() is measured elsewhere)")
    print(
        f"encode {encode:.2f} s (not part of reopen); strings {chars / 2**20:.0f} MiB, "
        f"{chars / n:.0f} chars per record"
    )
    print(f"decode {decode:.2f} s + build {build:.2f} s = {decode + build:.2f} s (target <= 30 s)")


# ---------------------------------------------------------------------- (d)


def writes(csr: CSR, queries: list[Query], n_writes: int) -> None:
    indptr, indices, values = csr
    n = indptr.shape[0] - 1
    index = SparseIndex.from_csr(doc_ids(n), *csr)
    rng = np.random.default_rng(3)
    targets = rng.integers(0, n, size=n_writes)
    sources = rng.integers(0, n, size=n_writes)
    times = []
    for t, s in zip(targets.tolist(), sources.tolist(), strict=True):
        sl = slice(int(indptr[s]), int(indptr[s + 1]))
        t0 = time.perf_counter()
        index.upsert([f"doc-{t:07d}"], [indices[sl]], [values[sl]])
        times.append(time.perf_counter() - t0)
    med, p95 = median_p95(times)
    qmed, _ = median_p95(latencies(lambda q: index.search(q[0], q[1], 10), queries))
    print(f"\n(d) {n_writes:,} single-record upserts (replacing) into the {n:,}-doc index")
    print(
        f"per upsert: median {ms(med)}, p95 {ms(p95)}, max {ms(max(times))}; "
        f"then {index.segment_count} segments, {index.dead_count} dead slots, "
        f"top10 median {ms(qmed)}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-docs", type=int, default=1_000_000, help="largest size in (a)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--writes", type=int, default=2_000)
    args = parser.parse_args(argv)

    print(__doc__.splitlines()[0])
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, bm25s "
        f"{bm25s.__version__}, {os.cpu_count()} cpus; data: SYNTHETIC (bench/_synthetic.py)"
    )
    corpus = SyntheticCorpus()
    queries = corpus.queries(args.queries)
    sizes = [n for n in (10_000, 100_000, 1_000_000) if n <= args.max_docs]
    if 100_000 not in sizes:
        sizes.append(100_000)  # (b), (c) and (d) run at 100k
    csr = scaling(sorted(sizes), queries, corpus)
    assert csr is not None
    side_by_side(csr, queries, k=10)
    reopen(csr)
    writes(csr, queries, args.writes)


if __name__ == "__main__":
    main()
