"""The arguments of a text search, checked once for both backends.

`HybridCollection.search("text", ...)` becomes a chromadb ``Search`` on Chroma Cloud
(`_native_search.build_native_search`) and a `LocalPlan` on embedded Chroma
(`_plan.plan_from_text`). Both builders start from `TextSearch.check`, so an argument is
refused the same way on either backend, with an `InvalidInputError` (a ``ValueError``)
naming it, before any request is sent or any record read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal

from chromadb.execution.expression import Where
from chromadb.execution.expression.operator import Key

from .._exceptions import InvalidInputError
from .._sparse_checks import check_sparse_key
from ._defaults import DEFAULT_CANDIDATE_LIMIT, DEFAULT_RRF_K, DEFAULT_SEARCH_LIMIT, DEFAULT_SELECT
from ._fusion import rrf_weights

__all__ = ["MissingRank", "Mode", "TextSearch", "check_count", "check_sparse_key"]

Mode = Literal["hybrid", "dense", "sparse"]
MissingRank = float | Literal["candidate_limit"] | None

_MODES = ("hybrid", "dense", "sparse")


@dataclass(frozen=True, slots=True)
class TextSearch:
    """A text query and its search arguments, checked and in the types Chroma sends.

    Attributes:
        query: The query text (non-empty).
        sparse_key: The collection's sparse key.
        mode: ``"hybrid"``, ``"dense"`` or ``"sparse"``.
        limit: Results to return.
        offset: Ranked results to skip first.
        where: The filter as a chromadb ``Where`` expression (a dict is converted the way
            ``Search(where=dict)`` converts it), or ``None``.
        weights: The ``Rrf`` weights as given (dense, sparse), or ``None``.
        fused_weights: The weights Chroma receives: 1.0 each by default, divided by their
            sum with ``normalize``. ``(1.0, 1.0)`` outside hybrid mode.
        normalize: As ``Rrf(normalize=...)``.
        k: The ``Rrf`` smoothing constant.
        dense_limit: The dense Knn's ``limit``.
        sparse_limit: The sparse Knn's ``limit``.
        dense_default: The dense Knn's ``default`` (the rank of a record it missed).
        sparse_default: The sparse Knn's ``default``.
        select: The selected keys, by name.
    """

    query: str
    sparse_key: str
    mode: Mode
    limit: int
    offset: int
    where: Where | None
    weights: tuple[float, ...] | None
    fused_weights: tuple[float, ...]
    normalize: bool
    k: float
    dense_limit: int
    sparse_limit: int
    dense_default: float | None
    sparse_default: float | None
    select: tuple[str, ...]

    @classmethod
    def check(
        cls,
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
    ) -> TextSearch:
        """Check a text search's arguments; the parameters are `build_native_search`'s.

        Raises:
            InvalidInputError: Naming the argument: an empty query; a bad sparse key or
                mode; ``limit``, ``candidate_limit`` or ``sparse_candidate_limit`` not a
                positive integer; ``offset`` not a non-negative integer; ``k`` not a finite
                number above 0; weights not finite, non-negative numbers, one per leg, or
                given outside hybrid mode; ``missing_rank`` not ``"candidate_limit"``,
                ``None`` or a finite number >= 0; a filter chromadb cannot read; ``select``
                not a collection of key names.
        """
        if not isinstance(query_text, str) or not query_text.strip():
            raise InvalidInputError(f"query must be a non-empty string, got {query_text!r}")
        check_sparse_key(sparse_key)
        if mode not in _MODES:
            raise InvalidInputError(f"mode must be 'hybrid', 'dense' or 'sparse', got {mode!r}")
        limit = check_count("limit", limit)
        dense_limit = check_count("candidate_limit", candidate_limit)
        sparse_limit = check_count(
            "sparse_candidate_limit",
            candidate_limit if sparse_candidate_limit is None else sparse_candidate_limit,
        )
        offset = check_count("offset", offset, minimum=0)
        if mode != "hybrid" and (weights is not None or normalize):
            raise InvalidInputError("weights and normalize apply to hybrid mode only")
        given_weights = None if weights is None else _as_tuple("weights", weights)
        # k is checked in every mode: a bad value is a mistake even where it is unused.
        fused = rrf_weights(2, k=k, weights=given_weights, normalize=normalize)
        return cls(
            query=query_text,
            sparse_key=sparse_key,
            mode=mode,
            limit=limit,
            offset=offset,
            where=_where(where),
            weights=None if given_weights is None else tuple(float(w) for w in given_weights),
            fused_weights=tuple(fused),
            normalize=bool(normalize),
            k=k,
            dense_limit=dense_limit,
            sparse_limit=sparse_limit,
            dense_default=_default(missing_rank, dense_limit),
            sparse_default=_default(missing_rank, sparse_limit),
            select=_select(select),
        )


def check_count(name: str, value: object, *, minimum: Literal[0, 1] = 1) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= ``minimum``.

    numpy integers are accepted and converted (chromadb would send them as is, and JSON
    cannot carry them); ``bool`` and ``float`` are refused, even ``10.0``.

    Raises:
        InvalidInputError: Naming the parameter.
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise InvalidInputError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def _as_tuple(name: str, values: Iterable[float]) -> tuple[float, ...]:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise InvalidInputError(f"{name} must be a sequence of numbers, got {values!r}")
    return tuple(values)


def _default(missing_rank: object, leg_limit: int) -> float | None:
    # "candidate_limit": just past the end of the leg's list, the rank Chroma's own hybrid
    # route gives a record one leg missed (rust/foundation-api, routes/search.rs).
    if missing_rank == "candidate_limit":
        return float(leg_limit)
    if missing_rank is None:
        return None
    if (
        isinstance(missing_rank, bool)
        or not isinstance(missing_rank, Real)
        or not math.isfinite(missing_rank)
        or missing_rank < 0
    ):
        raise InvalidInputError(
            "missing_rank must be 'candidate_limit', None or a finite number >= 0, "
            f"got {missing_rank!r}"
        )
    return float(missing_rank)


def _where(where: object) -> Where | None:
    if where is None or isinstance(where, Where):
        return where
    if not isinstance(where, dict):
        raise InvalidInputError(
            f"where must be a chromadb Where expression, a dict or None, got {type(where).__name__}"
        )
    try:
        # What Search(where=dict) does, so both routes read the same filter.
        return Where.from_dict(where)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"where is not a valid filter: {exc}") from exc


def _select(select: object) -> tuple[str, ...]:
    if isinstance(select, (str, bytes, Mapping)) or not isinstance(select, Iterable):
        raise InvalidInputError(
            f"select must be a list of keys such as ['#document', '#score'], got {select!r}"
        )
    names = []
    for key in select:
        if isinstance(key, Key):
            names.append(key.name)
        elif isinstance(key, str) and key:
            names.append(key)
        else:
            raise InvalidInputError(f"select holds {key!r}: keys are names or chromadb Keys")
    return tuple(dict.fromkeys(names))
