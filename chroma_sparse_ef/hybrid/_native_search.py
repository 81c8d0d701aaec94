"""The one ``Search`` that hybrid search sends to Chroma Cloud, built from a text query.

Embedded Chroma runs the very same expression locally (`_plan.plan_from_search` reads it
back), so local and Cloud rank alike by construction. The semantics behind each choice
are recorded in `_plan`'s docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from chromadb.execution.expression import K, Knn, Rrf, Search, Where
from chromadb.execution.expression.operator import Key

from ._fusion import DEFAULT_RRF_K, rrf_weights
from ._plan import (
    DEFAULT_CANDIDATE_LIMIT,
    DEFAULT_SEARCH_LIMIT,
    DEFAULT_SELECT,
    check_positive,
    check_sparse_key,
)

__all__ = ["build_native_search"]


def build_native_search(
    query_text: str,
    *,
    sparse_key: str,
    mode: Literal["hybrid", "dense", "sparse"] = "hybrid",
    limit: int = DEFAULT_SEARCH_LIMIT,
    offset: int = 0,
    where: Where | dict[str, Any] | None = None,
    weights: Sequence[float] | None = None,
    normalize: bool = False,
    k: int = DEFAULT_RRF_K,
    candidate_limit: int = DEFAULT_CANDIDATE_LIMIT,
    sparse_candidate_limit: int | None = None,
    missing_rank: float | Literal["candidate_limit"] | None = "candidate_limit",
    select: Sequence[str | Key] = DEFAULT_SELECT,
) -> Search:
    """Build the ``Search`` that runs hybrid (or single-leg) search natively on Chroma Cloud.

    ``"hybrid"``: ``Rrf`` over ``Knn(query_text, key=K.EMBEDDING)`` and
    ``Knn(query_text, key=sparse_key)``, both ``return_rank=True``. ``"dense"``/``"sparse"``:
    that one ``Knn``, scored by its distance. Cloud's client embeds ``query_text`` for each
    key with that key's embedding function.

    Args:
        query_text: The query.
        sparse_key: The collection's sparse embedding key.
        mode: ``"hybrid"``, ``"dense"`` or ``"sparse"``.
        limit: Results to return.
        offset: Ranked results to skip first.
        where: A chromadb ``Where`` expression or its dict form.
        weights: ``Rrf`` weights, dense then sparse; 1.0 each by default. Hybrid only.
        normalize: Scale ``weights`` to sum to 1. Hybrid only.
        k: ``Rrf`` smoothing constant.
        candidate_limit: How many records each Knn considers.
        sparse_candidate_limit: The sparse leg's own limit, if it should differ.
        missing_rank: The rank given to a record one leg did not return (each Knn's
            ``default``). ``"candidate_limit"``: just past the end of that leg's list, so a
            record only one leg found still ranks; ``None``: Chroma's default, which keeps
            only records both legs found.

    Returns:
        The ``Search``.

    Raises:
        ValueError: An unknown mode, a non-positive limit, candidate limit or ``k``, a
            negative offset, bad weights, or weights outside hybrid mode.
    """
    check_sparse_key(sparse_key)
    if mode not in ("hybrid", "dense", "sparse"):
        raise ValueError(f"mode must be 'hybrid', 'dense' or 'sparse', got {mode!r}")
    check_positive("limit", limit)
    check_positive("candidate_limit", candidate_limit)
    sparse_limit = candidate_limit if sparse_candidate_limit is None else sparse_candidate_limit
    check_positive("sparse_candidate_limit", sparse_limit)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a non-negative integer, got {offset!r}")

    search = Search(where=where).limit(limit, offset=offset).select(*select)
    if mode != "hybrid":
        if weights is not None or normalize:
            raise ValueError("weights and normalize apply to hybrid mode only")
        if mode == "dense":
            return search.rank(Knn(query=query_text, key=K.EMBEDDING, limit=candidate_limit))
        return search.rank(Knn(query=query_text, key=sparse_key, limit=sparse_limit))

    # Fail here, with Rrf's own rules, rather than later inside Search.to_dict().
    rrf_weights(2, k=k, weights=weights, normalize=normalize)

    def default(leg_limit: int) -> float | None:
        return float(leg_limit) if missing_rank == "candidate_limit" else missing_rank

    dense = Knn(
        query=query_text,
        key=K.EMBEDDING,
        limit=candidate_limit,
        default=default(candidate_limit),
        return_rank=True,
    )
    # A str key, not K(sparse_key): see the module docstring (chroma-core/chroma PR #7576).
    sparse = Knn(
        query=query_text,
        key=sparse_key,
        limit=sparse_limit,
        default=default(sparse_limit),
        return_rank=True,
    )
    rrf = Rrf(
        ranks=[dense, sparse],
        k=k,
        weights=None if weights is None else list(weights),
        normalize=normalize,
    )
    return search.rank(rrf)
