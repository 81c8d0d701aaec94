"""What `HybridCollection.search` returns: rows with each leg's rank and the matching terms."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

__all__ = ["SearchHit", "SearchResults", "TermMatch", "matching_terms"]


@dataclass(frozen=True, slots=True)
class TermMatch:
    """A query term that a sparse hit also holds: why the sparse leg found it.

    Attributes:
        index: The term id.
        label: The query's label for it (a token), or ``None`` if the query had none.
        query_weight: The term's weight in the query.
        document_weight: Its weight in the document's stored vector.
        contribution: ``query_weight * document_weight``, its share of the dot product.
    """

    index: int
    label: str | None
    query_weight: float
    document_weight: float
    contribution: float


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result.

    Attributes:
        id: The record id.
        score: The rank expression's score, lower is better (Chroma's convention): the
            ``Rrf`` score in hybrid mode, the distance in dense mode, ``1 - dot`` in
            sparse mode. ``None`` when the search ranked nothing or did not select it.
        document: The document, if selected.
        metadata: The metadata without HybridCollection's hidden keys, if selected.
        embedding: The dense embedding, if selected.
        dense_rank: 0-based rank in the dense leg, ``None`` if that leg did not return the
            record, or on Chroma Cloud (which does not report per-leg ranks).
        sparse_rank: The same for the sparse leg.
        matches: For a sparse hit on embedded Chroma: the query terms it shares, largest
            contribution first. Empty otherwise.
    """

    id: str
    score: float | None = None
    document: str | None = None
    metadata: dict[str, Any] | None = None
    embedding: list[float] | None = None
    dense_rank: int | None = None
    sparse_rank: int | None = None
    matches: tuple[TermMatch, ...] = ()

    @property
    def matched_labels(self) -> list[str]:
        """Labels of the matching query terms, largest contribution first (labelled ones only)."""
        return [m.label for m in self.matches if m.label is not None]


@dataclass(frozen=True, slots=True)
class SearchResults(Sequence[SearchHit]):
    """The rows of one search, best first. A sequence of `SearchHit`.

    Attributes:
        hits: The rows.
        backend: ``"local"`` (embedded Chroma, our sparse index) or ``"native"`` (Chroma
            Cloud's Search API).
    """

    hits: tuple[SearchHit, ...]
    backend: Literal["local", "native"]

    @overload
    def __getitem__(self, index: int) -> SearchHit: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[SearchHit]: ...

    def __getitem__(self, index: int | slice) -> SearchHit | Sequence[SearchHit]:
        return self.hits[index]

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self) -> Iterator[SearchHit]:
        return iter(self.hits)

    @property
    def ids(self) -> list[str]:
        """The ids, best first."""
        return [hit.id for hit in self.hits]

    @property
    def documents(self) -> list[str | None]:
        """The documents, best first."""
        return [hit.document for hit in self.hits]

    @property
    def scores(self) -> list[float | None]:
        """The scores, best first."""
        return [hit.score for hit in self.hits]


def matching_terms(
    query_indices: npt.NDArray[np.integer],
    query_values: npt.NDArray[np.floating],
    query_labels: Sequence[str] | None,
    doc_indices: npt.NDArray[np.integer],
    doc_values: npt.NDArray[np.floating],
) -> tuple[TermMatch, ...]:
    """The terms a query and a document share, largest contribution first.

    Args:
        query_indices: The query's term ids (any order, distinct).
        query_values: Its weights.
        query_labels: Its labels, aligned with ``query_indices``, or ``None``.
        doc_indices: The document's term ids, strictly ascending.
        doc_values: Its weights.

    Returns:
        One `TermMatch` per shared term with both weights nonzero; ties by term id.
    """
    q_idx = np.asarray(query_indices, dtype=np.int64)
    d_idx = np.asarray(doc_indices, dtype=np.int64)
    _, q_pos, d_pos = np.intersect1d(q_idx, d_idx, assume_unique=True, return_indices=True)
    # float32 weights, as the index scores them (see `_index`).
    q_w = np.asarray(query_values, dtype=np.float32)[q_pos].astype(np.float64)
    d_w = np.asarray(doc_values, dtype=np.float32)[d_pos].astype(np.float64)
    matches = [
        TermMatch(
            index=int(q_idx[qp]),
            label=None if query_labels is None else query_labels[int(qp)],
            query_weight=float(qw),
            document_weight=float(dw),
            contribution=float(qw * dw),
        )
        for qp, qw, dw in zip(q_pos, q_w, d_w, strict=True)
        if qw != 0.0 and dw != 0.0
    ]
    matches.sort(key=lambda m: (-m.contribution, m.index))
    return tuple(matches)
