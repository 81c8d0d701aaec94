"""How much could exact dynamic pruning skip? An oracle bound, on the synthetic corpus.

Run: ``python bench/bench_pruning_bounds.py [--docs 200000] [--queries 20]``

Exact pruning (MaxScore, Block-Max WAND and their relatives) skips postings only where an
upper bound proves them unable to reach the k-th best score ``theta``. This script hands
each method the *final* ``theta`` from the start (no real engine has it that early) and
counts what it must still read, so the figures bound from below what any implementation
of that method would read:

- MaxScore: the query's terms sorted by ``q_t * max_t``; the longest prefix whose bounds
  sum below ``theta`` is non-essential; the essential terms' postings must all be read.
- Block-max: documents cut into blocks of B consecutive slots, each (term, block) keeping
  its largest weight; a block whose summed bound stays below ``theta`` is skipped whole.

Data is SYNTHETIC (`_synthetic.py`), the same as `bench_sparse_index.py`. Needs the bench
extra (scipy).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic import BERT_VOCAB_SIZE, SyntheticCorpus

try:
    import scipy.sparse as sp
except ImportError as exc:  # pragma: no cover
    raise SystemExit("the benchmark needs: pip install 'chroma-sparse-ef[bench]'") from exc

#: Block sizes tried (documents per block); 64 to 128 are common in block-max engines.
BLOCKS = (16, 64, 256, 1024)
K = 10


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args(argv)
    n = args.docs
    corpus = SyntheticCorpus()
    indptr, indices, values = corpus.documents(n)
    csc = sp.csr_matrix((values, indices, indptr), shape=(n, BERT_VOCAB_SIZE)).tocsc()
    print(__doc__.splitlines()[0])
    print(f"{n:,} synthetic documents, top {K}, {args.queries} queries per shape")
    print(
        f"{'query terms':>11} {'postings':>10} {'MaxScore reads':>15} "
        + " ".join(f"{f'block {b}':>11}" for b in BLOCKS)
    )
    for nnz, seed in ((30, 2), (4, 5)):
        read_ms: list[float] = []
        read_blocks: dict[int, list[float]] = {b: [] for b in BLOCKS}
        totals: list[int] = []
        for terms, weights in corpus.queries(args.queries, seed=seed, nnz=nnz):
            sub = csc[:, terms.astype(np.int64)].tocsc()
            q = weights.astype(np.float64)
            scores = np.asarray(sub.astype(np.float64) @ q).ravel()
            theta = float(np.partition(scores, n - K)[n - K])
            lengths = np.diff(sub.indptr)
            total = int(lengths.sum())
            totals.append(total)
            maxima = np.array(
                [sub.data[a:b].max() if b > a else 0.0 for a, b in zip(sub.indptr[:-1], sub.indptr[1:], strict=True)]
            )  # fmt: skip
            bound = q * maxima
            order = np.argsort(bound)
            non_essential = np.cumsum(bound[order]) < theta
            essential = order[~non_essential]
            read_ms.append(float(lengths[essential].sum()) / total)
            for block in BLOCKS:
                n_blocks = (n + block - 1) // block
                upper = np.zeros(n_blocks)
                postings_in = np.zeros(n_blocks)
                for j in range(sub.shape[1]):
                    a, b = sub.indptr[j], sub.indptr[j + 1]
                    which = sub.indices[a:b] // block
                    block_max = np.zeros(n_blocks)
                    np.maximum.at(block_max, which, sub.data[a:b])
                    upper += q[j] * block_max
                    postings_in += np.bincount(which, minlength=n_blocks)
                read_blocks[block].append(float(postings_in[upper >= theta].sum()) / total)
        print(
            f"{nnz:>11} {statistics.median(totals):>10,.0f} "
            f"{statistics.median(read_ms):>14.0%} "
            + " ".join(f"{statistics.median(read_blocks[b]):>11.0%}" for b in BLOCKS)
        )
    print(
        "postings: median postings of the query's terms; the other columns: median share "
        "of them an oracle-theta MaxScore or block-max pass must still read"
    )


if __name__ == "__main__":
    main()
