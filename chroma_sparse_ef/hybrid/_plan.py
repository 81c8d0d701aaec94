"""`LocalPlan`: a search in the form embedded Chroma can run, and the two ways to get one.

- `plan_from_text` builds the plan of a text query (``HybridCollection.search("...")``)
  directly from its arguments, checked by `_search_args.TextSearch` exactly as
  `_native_search.build_native_search` checks them for Chroma Cloud. The two builders
  mirror each other: ``Rrf`` over a dense ``Knn`` on ``#embedding`` and a sparse ``Knn``
  on the sparse key, each ``return_rank=True`` with ``default`` = its limit. A test runs a
  text query both ways on a real collection (this plan, and `plan_from_search` of the
  native ``Search``) and gets the same ranking, so local and Cloud rank alike.
- `plan_from_search` reads a ``Search`` a user built and returns a `LocalPlan` when it stays
  inside the subset we can run ourselves (embedded Chroma has no Search API), or raises
  `UnsupportedSearchError` naming what falls outside it.

A user's ``Search`` is read from ``Search.to_dict()``, the payload chromadb sends to the server
(``chromadb/api/fastapi.py``, ``_search``), not from the builder objects: it is public, it
is the same for a ``Search`` built from objects or from dicts, and it is exactly what Cloud
would evaluate. One consequence: ``Rrf`` arrives compiled into arithmetic (see `_fusion`),
so `plan_from_search` recognises that shape, and the weights it reports are the ones sent,
already normalised if the ``Rrf`` asked for it.

Semantics this module relies on (chromadb 1.5.9 unless noted):

- ``Knn(query, key="#embedding", limit=16, default=None, return_rank=False)``
  (``chromadb/execution/expression/operator.py``). A string query is embedded client-side
  by ``CollectionCommon._embed_knn_string_queries``: with the collection's embedding function
  (``embed_query``) for ``#embedding``; for another key, with the schema's sparse embedding
  function's ``embed_query`` when that key has an enabled sparse index.
- chromadb 1.5.9 compares ``knn.key == "#embedding"`` without normalising a ``Key``; as
  ``Key.__eq__`` returns a truthy ``Eq``, ``Knn(query="text", key=K("sparse"))`` is embedded
  with the *dense* function (open fix: chroma-core/chroma PR #7576). So the sparse leg below
  names its key as a plain ``str``.
- Scores: a dense Knn's measure is the collection's distance; a sparse Knn's is
  ``1 - query . document`` (Rust: ``rust/worker/src/execution/operators/sparse_index_knn.rs``
  and ``sparse_log_knn.rs``); lower is better for both.
- Docs (docs.trychroma.com/cloud/search-api/ranking): each Knn considers its top ``limit``
  candidates among records passing the filter; a record must be in at least one Knn, and in
  every Knn whose ``default`` is ``None``. ``Rrf`` needs ``return_rank=True`` on its Knns
  (docs: hybrid-search, "The return_rank Requirement").
- ``Search().limit(limit, offset)``; no limit means all ranked records. ``select`` keys:
  ``#document``, ``#embedding``, ``#metadata``, ``#score``, and metadata field names, which
  return a metadata dict holding only those fields (Rust: ``operators/select.rs``).
  ``#id`` is always returned.
- Filters on embedded Chroma 1.5.9 (tried here): ``{"#document": {"$contains": ...}}`` and
  ``$not_contains`` work inside ``where``, even under ``$or``; ``$regex``/``$not_regex`` are
  refused in ``where`` and must go to ``where_document``; ``{"#id": ...}`` in ``where``
  silently matches nothing, so ids go to ``ids=``; a one-element ``$and``/``$or`` is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from chromadb.api.types import SparseVector, WhereDocument
from chromadb.api.types import Where as WhereDict
from chromadb.execution.expression import Search, Where
from chromadb.execution.expression.operator import Key

from .._exceptions import InvalidInputError, UnsupportedSearchError
from ._defaults import (
    DEFAULT_CANDIDATE_LIMIT,
    DEFAULT_KNN_LIMIT,
    DEFAULT_RRF_K,
    DEFAULT_SEARCH_LIMIT,
    DEFAULT_SELECT,
    EMBEDDING_KEY,
)
from ._fusion import rrf_weights
from ._search_args import MissingRank, Mode, TextSearch, check_count, check_sparse_key

__all__ = [
    "KnnLeg",
    "LocalPlan",
    "RrfSpec",
    "Selection",
    "UnsupportedSearchError",
    "local_plan",
    "plan_from_search",
    "plan_from_text",
]

_SELECT_KEYS = {"#id", "#document", "#embedding", "#metadata", "#score"}
_SUBSET = "only a single Knn, or a single Rrf over Knn(return_rank=True) legs"


@dataclass(frozen=True, slots=True)
class KnnLeg:
    """One ``Knn`` of a plan.

    Attributes:
        kind: ``"dense"`` for ``#embedding``, ``"sparse"`` for the collection's sparse key.
        key: The key searched, as Chroma names it.
        query: Text to embed, a dense vector, or a ``SparseVector``.
        limit: How many nearest records the leg considers.
        default: The score (a rank, under ``Rrf``) given to records the leg did not return,
            or ``None`` to require records to be in this leg.
        return_rank: Score by 0-based position instead of by measure.
    """

    kind: Literal["dense", "sparse"]
    key: str
    query: str | tuple[float, ...] | SparseVector
    limit: int = DEFAULT_KNN_LIMIT
    default: float | None = None
    return_rank: bool = False


@dataclass(frozen=True, slots=True)
class RrfSpec:
    """The ``Rrf`` over a plan's legs.

    Attributes:
        k: The smoothing constant.
        weights: One weight per leg, in leg order, as Chroma receives them: 1.0 each when
            the ``Rrf`` had none, already divided by their sum if it had ``normalize=True``.
            Pass them to `rrf_fuse` with ``normalize=False``.
    """

    k: float
    weights: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Selection:
    """What a search returns besides ids.

    Attributes:
        document: ``#document`` was selected.
        embedding: ``#embedding`` was selected.
        metadata: ``#metadata`` was selected: whole metadata dicts.
        score: ``#score`` was selected.
        metadata_keys: Metadata fields selected by name, sorted. Without ``metadata``, the
            metadata returned holds only these fields, and is ``None`` when none is set.
    """

    document: bool = False
    embedding: bool = False
    metadata: bool = False
    score: bool = False
    metadata_keys: tuple[str, ...] = ()

    @property
    def include(self) -> list[str]:
        """The ``include=`` list for ``collection.get`` that fetches what is selected."""
        fields = []
        if self.document:
            fields.append("documents")
        if self.embedding:
            fields.append("embeddings")
        if self.metadata or self.metadata_keys:
            fields.append("metadatas")
        return fields


@dataclass(frozen=True, slots=True)
class LocalPlan:
    """A ``Search`` in the form embedded Chroma can run.

    Attributes:
        legs: The Knns, in the order they appear in the rank expression: none (no rank:
            records in index order), one (the Knn is the whole rank), or one or two under
            ``rrf``, at most one per key.
        rrf: The ``Rrf`` fusing ``legs``, or ``None``.
        where: Metadata filter for ``collection.get/query(where=...)``, or ``None``.
        where_document: Document filter for ``where_document=...``, or ``None``.
        ids: Only these ids (from ``K.ID`` filters), or ``None`` for no id filter.
        limit: How many results to return, or ``None`` for all.
        offset: How many ranked results to skip first.
        select: What to return besides ids.
    """

    legs: tuple[KnnLeg, ...] = ()
    rrf: RrfSpec | None = None
    where: WhereDict | None = None
    where_document: WhereDocument | None = None
    ids: tuple[str, ...] | None = None
    limit: int | None = None
    offset: int = 0
    select: Selection = field(default_factory=Selection)

    def __post_init__(self) -> None:
        if self.rrf is None and len(self.legs) > 1:
            raise ValueError("Several Knn legs need an Rrf to combine them")
        if self.rrf is not None and len(self.rrf.weights) != len(self.legs):
            raise ValueError("An Rrf needs one weight per leg")
        if len({leg.kind for leg in self.legs}) != len(self.legs):
            raise ValueError("A plan has at most one leg per key")

    @property
    def dense(self) -> KnnLeg | None:
        """The leg on ``#embedding``, if any."""
        return next((leg for leg in self.legs if leg.kind == "dense"), None)

    @property
    def sparse(self) -> KnnLeg | None:
        """The leg on the sparse key, if any."""
        return next((leg for leg in self.legs if leg.kind == "sparse"), None)


def plan_from_text(
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
) -> LocalPlan:
    """The plan of a text query on embedded Chroma: `build_native_search`'s twin.

    Takes `build_native_search`'s arguments, checks them the same way, and builds the plan
    that ``plan_from_search(build_native_search(...))`` would give, without going through
    chromadb's wire format.

    Returns:
        The plan: hybrid is two ``return_rank`` legs under an `RrfSpec` carrying the
        weights Chroma would receive; ``"dense"``/``"sparse"`` is that one leg.

    Raises:
        InvalidInputError: An argument `TextSearch.check` refuses, named.
        UnsupportedSearchError: A filter embedded Chroma cannot run (e.g. ``$regex`` on
            metadata, a ``#id`` filter under ``|``).
    """
    return local_plan(
        TextSearch.check(
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
    )


def local_plan(args: TextSearch) -> LocalPlan:
    """The plan for checked text-search arguments (see `plan_from_text`)."""
    legs: tuple[KnnLeg, ...]
    rrf: RrfSpec | None = None
    if args.mode == "dense":
        # A lone Knn is the whole rank, scored by its measure: default and return_rank
        # only matter under Rrf, and the native Search leaves them unset too.
        legs = (KnnLeg("dense", EMBEDDING_KEY, args.query, args.dense_limit),)
    elif args.mode == "sparse":
        legs = (KnnLeg("sparse", args.sparse_key, args.query, args.sparse_limit),)
    else:
        legs = (
            KnnLeg("dense", EMBEDDING_KEY, args.query, args.dense_limit, args.dense_default, True),
            KnnLeg(
                "sparse", args.sparse_key, args.query, args.sparse_limit, args.sparse_default, True
            ),
        )
        rrf = RrfSpec(k=float(args.k), weights=args.fused_weights)
    where, where_document, ids = _split_filter(None if args.where is None else args.where.to_dict())
    return LocalPlan(
        legs=legs,
        rrf=rrf,
        where=where,
        where_document=where_document,
        ids=ids,
        limit=args.limit,
        offset=args.offset,
        select=_selection(args.select),
    )


def plan_from_search(search: Search, *, sparse_key: str) -> LocalPlan:
    """Translate a chromadb ``Search`` into a `LocalPlan`, or say why it cannot be.

    Supported: a rank that is one ``Knn``, one ``Rrf`` over ``Knn(return_rank=True)`` legs
    (one per key), or none; Knns on ``#embedding`` and on ``sparse_key`` with a text, dense
    or sparse query as fits the key; metadata filters that embedded Chroma accepts;
    ``K.DOCUMENT`` contains/regex filters; ``K.ID`` ``==``/``is_in`` filters at the top level
    or under ``&``; limit, offset and select.

    Args:
        search: The search, as built with chromadb's ``Search``/``Knn``/``Rrf``/``K``.
        sparse_key: The collection's sparse embedding key, e.g. ``"sparse_embedding"``.

    Returns:
        The plan.

    Raises:
        UnsupportedSearchError: The search uses something outside that subset: other keys,
            arithmetic over ranks, ``Rrf`` legs without ``return_rank``, two legs on one key,
            ``group_by``, ``#id`` filters under ``|`` or negated, ``#embedding``/``#score``
            filters, or ``$regex`` on metadata or under ``|``.
        InvalidInputError: (a ``ValueError``) ``sparse_key`` is not a metadata key name, or
            a value is invalid: a Knn limit that is not a positive integer, a default that
            is not a finite number, an ``Rrf`` ``k`` or weight that is NaN or infinite.
        ValueError: chromadb's own validation of ``Rrf`` (``k <= 0``, a negative weight),
            raised while serialising.
    """
    check_sparse_key(sparse_key)
    payload = search.to_dict()
    if payload.get("group_by"):
        raise UnsupportedSearchError("group_by is not supported locally")
    legs, rrf = _rank(payload.get("rank"), sparse_key)
    where, where_document, ids = _split_filter(payload.get("filter"))
    limit = payload.get("limit") or {}
    return LocalPlan(
        legs=legs,
        rrf=rrf,
        where=where,
        where_document=where_document,
        ids=ids,
        limit=limit.get("limit"),
        offset=limit.get("offset", 0),
        select=_selection((payload.get("select") or {}).get("keys", [])),
    )


def _only(node: Mapping[str, Any], what: str) -> tuple[str, Any]:
    if not isinstance(node, Mapping) or len(node) != 1:
        raise UnsupportedSearchError(f"Unexpected {what}: {node!r}")
    return next(iter(node.items()))


def _rank(
    rank: Mapping[str, Any] | None, sparse_key: str
) -> tuple[tuple[KnnLeg, ...], RrfSpec | None]:
    if rank is None:
        return (), None
    op, body = _only(rank, "rank expression")
    if op == "$knn":
        return (_leg(body, sparse_key),), None
    terms = _rrf_terms(op, body)
    if terms is None:
        raise UnsupportedSearchError(f"Rank expression '{op}' is not supported locally: {_SUBSET}")
    legs: list[KnnLeg] = []
    weights: list[float] = []
    ks: set[float] = set()
    for weight, k, inner in terms:
        inner_op, inner_body = _only(inner, "rank expression")
        if inner_op != "$knn":
            raise UnsupportedSearchError(
                f"Rrf over a '{inner_op}' rank is not supported locally: {_SUBSET}"
            )
        leg = _leg(inner_body, sparse_key)
        if not leg.return_rank:
            # Docs, hybrid-search "The return_rank Requirement": without it RRF fuses
            # distances, which the docs call incorrect.
            raise UnsupportedSearchError(
                f"Rrf over Knn on '{leg.key}' without return_rank=True is not supported "
                "locally: Rrf needs ranks, not distances"
            )
        if any(existing.kind == leg.kind for existing in legs):
            raise UnsupportedSearchError(
                f"Two Knn legs on '{leg.key}' are not supported locally: one per key"
            )
        legs.append(leg)
        weights.append(weight)
        ks.add(k)
    if len(ks) != 1:
        raise UnsupportedSearchError("Rrf terms with different k are not supported locally")
    k = ks.pop()
    # Rrf.to_dict() lets NaN and infinity through; refuse them as a text query would.
    rrf_weights(len(legs), k=k, weights=weights, normalize=False)
    return tuple(legs), RrfSpec(k=k, weights=tuple(weights))


def _rrf_terms(op: str, body: Any) -> list[tuple[float, float, Mapping[str, Any]]] | None:
    # Rrf.to_dict(): {"$mul": [{"$val": -1}, S]} with S one "$div" term (one rank) or a
    # "$sum" of them; each term {"$div": {"left": {"$val": w}, "right": {"$sum":
    # [{"$val": k}, rank]}}}. Anything else is some other arithmetic.
    if op != "$mul" or not isinstance(body, list) or len(body) != 2:
        return None
    sign, fused = body
    if not _is_val(sign) or sign["$val"] != -1 or not isinstance(fused, Mapping):
        return None
    if "$div" in fused and len(fused) == 1:
        raw_terms: list[Any] = [fused]
    elif "$sum" in fused and len(fused) == 1 and isinstance(fused["$sum"], list):
        raw_terms = fused["$sum"]
    else:
        return None
    terms = []
    for term in raw_terms:
        div = term.get("$div") if isinstance(term, Mapping) and len(term) == 1 else None
        if not isinstance(div, Mapping) or not _is_val(div.get("left")):
            return None
        right = div.get("right")
        inner = right.get("$sum") if isinstance(right, Mapping) and len(right) == 1 else None
        if not isinstance(inner, list) or len(inner) != 2 or not _is_val(inner[0]):
            return None
        terms.append((float(div["left"]["$val"]), float(inner[0]["$val"]), inner[1]))
    return terms


def _is_val(node: Any) -> bool:
    return (
        isinstance(node, Mapping)
        and len(node) == 1
        and isinstance(node.get("$val"), (int, float))
        and not isinstance(node.get("$val"), bool)
    )


def _leg(knn: Mapping[str, Any], sparse_key: str) -> KnnLeg:
    key = knn.get("key", EMBEDDING_KEY)
    if key == EMBEDDING_KEY:
        kind: Literal["dense", "sparse"] = "dense"
    elif key == sparse_key:
        kind = "sparse"
    else:
        raise UnsupportedSearchError(
            f"Knn on key {key!r} is not supported locally: only {EMBEDDING_KEY!r} "
            f"and {sparse_key!r}"
        )
    limit = check_count("Knn limit", knn.get("limit", DEFAULT_KNN_LIMIT))
    default = knn.get("default")
    if default is not None and (
        isinstance(default, bool)
        or not isinstance(default, (int, float))
        or not math.isfinite(default)
    ):
        raise InvalidInputError(f"Knn default must be a finite number or None, got {default!r}")
    return KnnLeg(
        kind=kind,
        key=key,
        query=_query(knn.get("query"), kind, key),
        limit=limit,
        default=None if default is None else float(default),
        return_rank=bool(knn.get("return_rank", False)),
    )


def _query(query: Any, kind: str, key: str) -> str | tuple[float, ...] | SparseVector:
    if isinstance(query, str):
        return query
    if isinstance(query, Mapping):
        if kind != "sparse":
            raise UnsupportedSearchError(
                f"Knn on {key!r} needs text or a dense vector, got a sparse vector"
            )
        # The transport form Knn.to_dict() gives a SparseVector; from_dict validates it.
        return SparseVector.from_dict(dict(query))
    if isinstance(query, (list, tuple)) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in query
    ):
        if kind != "dense":
            raise UnsupportedSearchError(
                f"Knn on sparse key {key!r} needs text or a SparseVector, got a dense vector"
            )
        if not query:
            raise ValueError("A dense Knn query vector must not be empty")
        return tuple(float(x) for x in query)
    raise UnsupportedSearchError(f"Knn query of type {type(query).__name__} is not supported")


def _selection(keys: Sequence[str]) -> Selection:
    return Selection(
        document="#document" in keys,
        embedding="#embedding" in keys,
        metadata="#metadata" in keys,
        score="#score" in keys,
        metadata_keys=tuple(sorted({key for key in keys if key not in _SELECT_KEYS})),
    )


def _split_filter(
    where: Mapping[str, Any] | None,
) -> tuple[WhereDict | None, WhereDocument | None, tuple[str, ...] | None]:
    """Split a Search filter into embedded Chroma's ``where``, ``where_document``, ``ids``."""
    if where is None:
        return None, None, None
    metadata_parts: list[dict[str, Any]] = []
    document_parts: list[dict[str, Any]] = []
    ids: list[str] | None = None
    for conjunct in _conjuncts(where):
        name, condition = _only(conjunct, "filter")
        if name == "#id":
            op, value = _only(condition, "filter on #id")
            if op == "$eq":
                wanted = [value]
            elif op == "$in":
                wanted = list(value)
            else:
                raise UnsupportedSearchError(
                    f"Filter '{op}' on #id is not supported locally: only K.ID == id "
                    "and K.ID.is_in([...])"
                )
            ids = list(dict.fromkeys(wanted)) if ids is None else [i for i in ids if i in wanted]
        elif name == "#document" and _only(condition, "filter")[0] in ("$regex", "$not_regex"):
            document_parts.append(dict(condition))
        else:
            metadata_parts.append(_local_where(conjunct))
    where_document = cast("WhereDocument | None", _join(document_parts))
    return _join(metadata_parts), where_document, None if ids is None else tuple(ids)


def _conjuncts(where: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if len(where) == 1 and isinstance(where.get("$and"), list) and where["$and"]:
        return [part for child in where["$and"] for part in _conjuncts(child)]
    return [where]


def _local_where(node: Mapping[str, Any]) -> dict[str, Any]:
    name, condition = _only(node, "filter")
    if name in ("$and", "$or"):
        if not isinstance(condition, list) or not condition:
            raise UnsupportedSearchError(f"'{name}' needs a non-empty list of conditions")
        children = [_local_where(child) for child in condition]
        # Embedded Chroma refuses a one-element $and/$or; it means its element.
        return children[0] if len(children) == 1 else {name: children}
    op, _ = _only(condition, f"filter on {name!r}")
    if name == "#id":
        raise UnsupportedSearchError(
            "A #id filter under | is not supported locally: only at the top level or under &"
        )
    if name == "#document":
        if op in ("$regex", "$not_regex"):
            raise UnsupportedSearchError(
                f"'{op}' on #document under | is not supported locally: only at the top "
                "level or under &"
            )
    elif name.startswith("#"):
        raise UnsupportedSearchError(f"Filters on {name!r} are not supported locally")
    elif op in ("$regex", "$not_regex"):
        raise UnsupportedSearchError(
            f"'{op}' on metadata field {name!r} is not supported by embedded Chroma"
        )
    return {name: dict(condition)}


def _join(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}
