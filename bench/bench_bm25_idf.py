"""What Chroma Cloud's BM25 IDF costs the sparse leg: the same index, IDF on and off.

Issue 11 asks that ranking with IDF (``bm25=True``) cost at most 10% over the same sparse
leg without it at 100k records. Both run in one process on one index, taking turns on
every query (off, on, on, off, ...) so that load from other processes hits both alike;
each query is timed as the best of ``--repeat`` calls, and the report is the median and
p95 over queries, and their ratio.

Data: SYNTHETIC, shaped like BM25 (`_synthetic.SyntheticCorpus`: Zipf term ids over a
30,522-term vocabulary): documents of ~40 distinct terms, and BM25-length queries of 2 to
8 terms, plus the 30-term SPLADE-length queries of `bench_sparse_index.py` for
comparison. IDF needs ``n_t`` per query term, counted over live postings (cached per index
state) and the float32 arithmetic of `hybrid._idf.bm25_idf`.

Run::

    python bench/bench_bm25_idf.py                 # 100k records
    python bench/bench_bm25_idf.py --docs 200000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic import SyntheticCorpus

from chroma_sparse_ef.hybrid._index import SparseIndex

#: Distinct terms per BM25-like document before de-duplication (about 40 after).
DOC_DRAWS = 48
#: Results per query: the hybrid sparse leg's default candidate count.
LIMIT = 100


def _best(fn: object, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    corpus = SyntheticCorpus()
    indptr, indices, values = corpus.documents(args.docs, mean_draws=DOC_DRAWS)
    ids = [f"d{i}" for i in range(args.docs)]
    index = SparseIndex.from_csr(ids, indptr, indices, values)
    print(
        f"{args.docs:,} records, {indices.shape[0] / args.docs:.1f} terms each; "
        f"limit {LIMIT}; best of {args.repeat} per query, IDF off and on taking turns"
    )
    rng = np.random.default_rng(7)
    bm25_queries = [
        q
        for n in rng.integers(2, 9, size=args.queries).tolist()
        for q in corpus.queries(1, seed=int(rng.integers(1 << 30)), nnz=n)
    ]
    splade_queries = corpus.queries(args.queries, seed=3, nnz=30)
    n = args.docs
    print("| queries | IDF off, median / p95 | IDF on, median / p95 | on / off (median) |")
    print("|---|---|---|---|")
    for label, queries in (("BM25-length (2-8 terms)", bm25_queries), ("30 terms", splade_queries)):
        off: list[float] = []
        on: list[float] = []
        for i, (q_idx, q_val) in enumerate(queries):
            order = [(off, None), (on, n)] if i % 2 == 0 else [(on, n), (off, None)]
            for sink, records in order:
                sink.append(
                    _best(
                        lambda q_idx=q_idx, q_val=q_val, records=records: index.search(
                            q_idx, q_val, LIMIT, idf_records=records
                        ),
                        args.repeat,
                    )
                )
        off_ms, on_ms = np.array(off) * 1e3, np.array(on) * 1e3
        print(
            f"| {label} | {np.median(off_ms):.2f} / {np.percentile(off_ms, 95):.2f} ms "
            f"| {np.median(on_ms):.2f} / {np.percentile(on_ms, 95):.2f} ms "
            f"| **{np.median(on_ms) / np.median(off_ms):.2f}x** |"
        )


if __name__ == "__main__":
    main()
