"""SYNTHETIC SPLADE-like sparse vectors for benchmarks. Not real embeddings.

Shaped after SPLADE over BERT's vocabulary, nothing more: term ids are drawn from a Zipf
distribution (exponent 1) over 30,522 tokens, with a fixed random map from frequency rank
to token id; documents hold about 150 distinct terms, queries exactly 30; weights are
positive, lognormal. Real SPLADE postings are shaped by the model and the corpus, so treat
the latencies as "same order of magnitude", not as a prediction for your data.

Everything is seeded: the same arguments give the same arrays on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["BERT_VOCAB_SIZE", "SyntheticCorpus"]

#: bert-base-uncased's vocabulary, the one SPLADE models use.
BERT_VOCAB_SIZE = 30_522
#: Draws per document before duplicates collapse: 210 draws keep ~150 distinct terms at
#: exponent 1 (measured: 200 draws gave 143.3 on average).
_DOC_DRAWS = 210
#: Documents vary in length: draws uniform in +-40% around the mean.
_DOC_SPREAD = 0.4
#: Documents generated per chunk, to bound the temporary draw matrix (~50 MB).
_CHUNK = 50_000


@dataclass(frozen=True)
class SyntheticCorpus:
    """A seeded synthetic vocabulary; documents and queries drawn from it share terms.

    Attributes:
        seed: Seeds the rank-to-token map; documents and queries take their own seeds.
        vocab_size: Number of token ids.
        exponent: Zipf exponent of term frequencies.
    """

    seed: int = 0
    vocab_size: int = BERT_VOCAB_SIZE
    exponent: float = 1.0

    def _cdf_and_map(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        ranks = np.arange(1, self.vocab_size + 1, dtype=np.float64)
        cdf = np.cumsum(ranks**-self.exponent)
        cdf /= cdf[-1]
        token_of_rank = np.random.default_rng(self.seed).permutation(self.vocab_size)
        return cdf, token_of_rank

    def documents(
        self, n_docs: int, *, seed: int = 1, mean_draws: int = _DOC_DRAWS
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32], npt.NDArray[np.float32]]:
        """``n_docs`` synthetic documents as a CSR batch.

        Args:
            n_docs: How many documents.
            seed: Seeds the draws.
            mean_draws: Mean number of term draws per document (before de-duplication).

        Returns:
            ``(indptr, indices, values)``: indices strictly ascending per document
            (uint32), values positive lognormal (float32).
        """
        rng = np.random.default_rng(seed)
        cdf, token_of_rank = self._cdf_and_map()
        sentinel = self.vocab_size  # sorts after every real token id
        width = int(mean_draws * (1 + _DOC_SPREAD)) + 1
        index_parts: list[npt.NDArray[np.uint32]] = []
        lengths = np.empty(n_docs, dtype=np.int64)
        for start in range(0, n_docs, _CHUNK):
            rows = min(_CHUNK, n_docs - start)
            draws = token_of_rank[np.searchsorted(cdf, rng.random((rows, width)))]
            n_draws = rng.integers(
                int(mean_draws * (1 - _DOC_SPREAD)), width, size=rows, endpoint=True
            )
            draws[np.arange(width) >= n_draws[:, None]] = sentinel
            draws.sort(axis=1)
            keep = draws != sentinel
            keep[:, 1:] &= draws[:, 1:] != draws[:, :-1]
            index_parts.append(draws[keep].astype(np.uint32))
            lengths[start : start + rows] = keep.sum(axis=1)
        indptr = np.zeros(n_docs + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = np.concatenate(index_parts) if index_parts else np.empty(0, np.uint32)
        values = np.asarray(
            rng.lognormal(mean=0.0, sigma=0.75, size=indices.shape[0]), dtype=np.float32
        )
        return indptr, indices, values

    def queries(
        self, n_queries: int, *, seed: int = 2, nnz: int = 30
    ) -> list[tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32]]]:
        """``n_queries`` synthetic queries of exactly ``nnz`` distinct terms.

        Args:
            n_queries: How many queries.
            seed: Seeds the draws.
            nnz: Distinct terms per query.

        Returns:
            ``(indices, values)`` pairs, indices ascending (uint32), values positive.
        """
        rng = np.random.default_rng(seed)
        cdf, token_of_rank = self._cdf_and_map()
        out: list[tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32]]] = []
        for _ in range(n_queries):
            terms: list[int] = []
            seen: set[int] = set()
            while len(terms) < nnz:
                for t in token_of_rank[np.searchsorted(cdf, rng.random(4 * nnz))].tolist():
                    if t not in seen and len(terms) < nnz:
                        seen.add(t)
                        terms.append(t)
            indices = np.sort(np.asarray(terms, dtype=np.uint32))
            values = rng.lognormal(mean=0.0, sigma=0.75, size=nnz).astype(np.float32)
            out.append((indices, values))
        return out
