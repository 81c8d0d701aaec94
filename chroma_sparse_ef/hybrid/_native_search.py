"""The one ``Search`` that hybrid search sends to Chroma Cloud, built from a text query.

Embedded Chroma runs the same query as a `LocalPlan` built by `_plan.plan_from_text` from
the same checked arguments (`_search_args.TextSearch`); a test runs a text query both ways,
as that plan and as ``plan_from_search`` of this ``Search``, and gets the same ranking. The
semantics behind each choice are recorded in `_plan`'s docstring.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chromadb.execution.expression import K, Knn, Rrf, Search, Where
from chromadb.execution.expression.operator import Key

from ._defaults import DEFAULT_CANDIDATE_LIMIT, DEFAULT_RRF_K, DEFAULT_SEARCH_LIMIT, DEFAULT_SELECT
from ._search_args import MissingRank, Mode, TextSearch

__all__ = ["build_native_search"]


def build_native_search(
    query_text: str,
    *,
    sparse_key: str,
    mode: Mode = "hybrid",
    limit: int = DEFAULT_SEARCH_LIMIT,
    offset: int = 0,
    where: Where | dict[str, Any] | None = None,
    weights: Iterable[float] | None = None,
    normalize: bool = False,
    k: float = DEFAULT_RRF_K,
    candidate_limit: int = DEFAULT_CANDIDATE_LIMIT,
    sparse_candidate_limit: int | None = None,
    missing_rank: MissingRank = "candidate_limit",
    select: Iterable[str | Key] = DEFAULT_SELECT,
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
        InvalidInputError: (a ``ValueError``) An argument `TextSearch.check` refuses,
            named: an unknown mode; a limit, candidate limit or offset that is not an
            integer in range; ``k`` not a finite number above 0; weights that are not
            finite non-negative numbers, or given outside hybrid mode; a bad
            ``missing_rank``, filter or selection. Raised before anything is sent.
    """
    args = TextSearch.check(
        query_text,
        sparse_key=sparse_key,
        mode=mode,
        limit=limit,
        offset=offset,
        where=where,
        weights=weights,
        normalize=normalize,
        k=k,
        candidate_limit=candidate_limit,
        sparse_candidate_limit=sparse_candidate_limit,
        missing_rank=missing_rank,
        select=select,
    )
    return native_search(args)


def native_search(args: TextSearch) -> Search:
    """The ``Search`` for checked arguments (see `build_native_search`)."""
    search = Search(where=args.where).limit(args.limit, offset=args.offset).select(*args.select)
    if args.mode == "dense":
        return search.rank(Knn(query=args.query, key=K.EMBEDDING, limit=args.dense_limit))
    if args.mode == "sparse":
        return search.rank(Knn(query=args.query, key=args.sparse_key, limit=args.sparse_limit))
    dense = Knn(
        query=args.query,
        key=K.EMBEDDING,
        limit=args.dense_limit,
        default=args.dense_default,
        return_rank=True,
    )
    # A str key, not K(sparse_key): see the module docstring (chroma-core/chroma PR #7576).
    sparse = Knn(
        query=args.query,
        key=args.sparse_key,
        limit=args.sparse_limit,
        default=args.sparse_default,
        return_rank=True,
    )
    rrf = Rrf(
        ranks=[dense, sparse],
        k=args.k,  # type: ignore[arg-type]  # chromadb types k as int; a float works
        weights=None if args.weights is None else list(args.weights),
        normalize=args.normalize,
    )
    return search.rank(rrf)
