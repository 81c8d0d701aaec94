"""Reciprocal Rank Fusion exactly as Chroma's Search API computes it. Pure: no I/O.

What Chroma does, and where it says so (chromadb 1.5.9 and the chroma-core/chroma Rust
source it talks to):

- ``Rrf`` is not evaluated on the server as a unit. ``Rrf.to_dict()``
  (``chromadb/execution/expression/operator.py``) compiles it into arithmetic,
  ``-(w_1 / (k + knn_1) + w_2 / (k + knn_2) + ...)``: ``{"$mul": [{"$val": -1}, {"$sum":
  [{"$div": {"left": {"$val": w}, "right": {"$sum": [{"$val": k}, {"$knn": ...}]}}}, ...]}]}``.
- Each ``Knn`` with ``return_rank=True`` gives the 0-based position of a record in that
  Knn's own result list, which holds at most ``limit`` records (docs:
  docs.trychroma.com/cloud/search-api/hybrid-search, "RRF Formula").
- The server evaluates the arithmetic over "rank domains" (Rust:
  ``rust/worker/src/execution/operators/rank.rs``, ``RankDomain::merge``): a Knn is defined on
  the records it returned, and elsewhere on its ``default`` if it has one. Combining two
  domains keeps the union of records when both have a default, only the records of the side
  without a default when one has none, and the intersection when neither has. So a record
  missing from a Knn with ``default=None`` is dropped; a record missing from a Knn with a
  default gets that default *as its rank* (hybrid-search docs, "Document Selection with RRF":
  ``default=1000`` means "default rank of 1000").
- All of it is ``f32`` arithmetic, folded left from 0.0 in the order of the ranks
  (``RankExpr::Summation`` folds from ``RankDomain::flat(0.0)``). We repeat it in ``f32``
  so scores, and therefore ties, come out bit for bit as on the server.
- The result is sorted ascending by score, ties broken by Chroma's internal offset id
  (``RecordMeasure``'s ``Ord`` in ``rust/types/src/execution/operator.rs``: ``measure``, then
  ``offset_id``). Offset ids are assigned in insertion order and are not visible to clients,
  so `rrf_fuse` takes an optional insertion order and otherwise breaks ties by id.
- Validation mirrors ``Rrf.to_dict()``: at least one rank, ``k > 0``, as many weights as
  ranks, no negative weight, and with ``normalize=True`` a positive weight sum. Weights
  default to 1.0 each; ``normalize`` divides them by their sum (in Python ``float``, before
  they are sent, as ``Rrf.to_dict()`` does). ``Rrf.to_dict()`` lets NaN and infinity
  through (``nan <= 0`` and ``nan < 0`` are false) and the server then ranks by garbage, so
  `rrf_weights` also refuses non-numbers and non-finite values, naming the parameter.

A Knn result lists each record once. chromadb's local HNSW index breaks that when two
processes write one ``PersistentClient`` path: one ``collection.query`` can then return an
id twice (seen with chromadb 1.5.9: after two processes each upserted 1,800 records into
one collection, 9 of 200 queries from a third process did). `RankedLeg` keeps the first
occurrence, the rank Chroma reported first, and logs a warning once per process rather
than failing every search of that collection.

The docs' worked example says document A (-0.0328) ranks above B (-0.0331); by the same
page's rule (ascending, lower is better) B ranks first, and that is what the server does.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np

from .._exceptions import InvalidInputError
from ._defaults import DEFAULT_RRF_K

__all__ = [
    "DEFAULT_RRF_K",
    "FusedHit",
    "RankedLeg",
    "rrf_fuse",
    "rrf_weights",
    "single_leg_hits",
]

_log = logging.getLogger(__name__)
# One warning per process about duplicate ids: the cause (two writer processes) stays
# until the collection is rebuilt, and every search of it would log again.
_duplicates_reported = threading.Event()


@dataclass(frozen=True, slots=True)
class RankedLeg:
    """The result of one Knn: record ids, best first, as many as its ``limit`` allowed.

    Attributes:
        ids: Record ids in the order the Knn returned them. Position ``i`` is rank ``i``.
        scores: The Knn's raw measures for the same records (a distance for the dense key,
            ``1 - dot`` for a sparse key), if known. RRF does not use them.
    """

    ids: tuple[str, ...]
    scores: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.scores is not None and len(self.scores) != len(self.ids):
            raise ValueError(f"A ranked leg has {len(self.ids)} ids but {len(self.scores)} scores")
        if len(set(self.ids)) != len(self.ids):
            self._keep_first_occurrences()

    def _keep_first_occurrences(self) -> None:
        first: dict[str, int] = {}
        for position, record_id in enumerate(self.ids):
            first.setdefault(record_id, position)
        kept = sorted(first.values())
        repeated = sorted({rid for i, rid in enumerate(self.ids) if first[rid] != i})
        # Frozen: __post_init__ is the one place a dataclass may still set its fields.
        object.__setattr__(self, "ids", tuple(self.ids[i] for i in kept))
        if self.scores is not None:
            object.__setattr__(self, "scores", tuple(self.scores[i] for i in kept))
        if not _duplicates_reported.is_set():
            _duplicates_reported.set()
            _log.warning(
                "A Knn result listed %d id(s) twice (e.g. %r); kept each first occurrence. "
                "chromadb's local HNSW index does this when two processes write one "
                "PersistentClient path: write from one process, or use a Chroma server. "
                "Logged once per process.",
                len(repeated),
                repeated[0],
            )


@dataclass(frozen=True, slots=True)
class FusedHit:
    """One record after fusion.

    Attributes:
        id: The record id.
        score: The fused score, lower is better, as the ``f32`` Chroma computes, in the
            ``float`` Chroma's Python client would hand back for it.
        ranks: The record's 0-based rank in each leg, in leg order; ``None`` where the leg
            did not return it (it was scored with that leg's default).
    """

    id: str
    score: float
    ranks: tuple[int | None, ...]


def rrf_fuse(
    legs: Sequence[RankedLeg],
    *,
    k: float = DEFAULT_RRF_K,
    weights: Sequence[float] | None = None,
    normalize: bool = False,
    defaults: Sequence[float | None] | None = None,
    insertion_order: Mapping[str, int] | None = None,
) -> list[FusedHit]:
    """Fuse ranked legs the way Chroma's ``Rrf`` over ``Knn(return_rank=True)`` does.

    ``score = -sum(w_i / (k + rank_i))``, with ``rank_i`` the record's 0-based position in leg
    ``i``, or leg ``i``'s default when the leg did not return it. A record missing from a
    leg whose default is ``None`` is left out. Records that no leg returned are never scored.

    Args:
        legs: One `RankedLeg` per ``Knn``, in the order the ranks appear in the ``Rrf``.
        k: Smoothing constant, as ``Rrf(k=...)``.
        weights: One weight per leg, as ``Rrf(weights=...)``; 1.0 each when omitted.
        normalize: Scale the weights to sum to 1, as ``Rrf(normalize=True)``.
        defaults: Each leg's ``Knn(default=...)``: the rank given to a record the leg did
            not return, or ``None`` (Chroma's default) to require the record in that leg.
            Omitted means ``None`` for every leg.
        insertion_order: Optional position of each id in insertion order, to break ties the
            way Chroma's internal offset ids do. Ties between ids it does not list, or
            without it, are broken by id.

    Returns:
        The fused records, best (lowest score) first. Apply ``offset``/``limit`` by slicing.

    Raises:
        InvalidInputError: (a ``ValueError``) No legs; ``k`` not a finite number above 0;
            weights or defaults not one per leg; a weight that is negative, NaN, infinite
            or not a number; ``normalize=True`` with weights summing to 0.
    """
    effective = rrf_weights(len(legs), k=k, weights=weights, normalize=normalize)
    if defaults is None:
        defaults = [None] * len(legs)
    elif len(defaults) != len(legs):
        raise InvalidInputError(
            f"Number of defaults ({len(defaults)}) must match number of ranks ({len(legs)})"
        )

    positions = [{record_id: i for i, record_id in enumerate(leg.ids)} for leg in legs]
    candidates = _candidates(legs, positions, defaults)
    if not candidates:
        return []

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        total = np.zeros(len(candidates), dtype=np.float32)
        k32 = np.float32(k)
        for weight, default, position in zip(effective, defaults, positions, strict=True):
            # Ranks absent from a leg are its default; `candidates` only holds such records
            # when the default is not None.
            ranks = np.array(
                [position.get(record_id, default) for record_id in candidates],
                dtype=np.float32,
            )
            # `k + rank` is `Sum([Val(k), Knn])` folded from 0.0; 0.0 + k is exact in f32.
            total = total + np.float32(weight) / (k32 + ranks)
        scores = -total

    def order(index: int) -> tuple[float, bool, int, str]:
        record_id = candidates[index]
        inserted = None if insertion_order is None else insertion_order.get(record_id)
        # Listed ids first, in insertion order; then the rest by id.
        return (_total_order(float(scores[index])), inserted is None, inserted or 0, record_id)

    ranked = sorted(range(len(candidates)), key=order)
    return [
        FusedHit(
            id=candidates[i],
            score=_as_client_float(scores[i]),
            ranks=tuple(position.get(candidates[i]) for position in positions),
        )
        for i in ranked
    ]


def single_leg_hits(leg: RankedLeg, *, return_rank: bool = False) -> list[FusedHit]:
    """Score a ``Knn`` that is the whole rank expression, as Chroma does.

    The server scores each returned record with its measure, or with its 0-based position
    when ``return_rank=True`` (``RankExpr::Knn`` in ``rank.rs``); the default plays no part,
    since there is nothing to combine with. The order stays the Knn's own.

    Args:
        leg: The Knn's result; needs ``scores`` unless ``return_rank`` is set.
        return_rank: As ``Knn(return_rank=...)``.

    Returns:
        One hit per id, in leg order, each with a single rank.

    Raises:
        ValueError: ``return_rank`` is false and the leg has no scores.
    """
    if not return_rank and leg.scores is None:
        raise ValueError("A Knn without return_rank is scored by its measures: pass scores")
    hits = []
    for i, record_id in enumerate(leg.ids):
        raw = float(i) if return_rank or leg.scores is None else leg.scores[i]
        hits.append(FusedHit(id=record_id, score=_as_client_float(np.float32(raw)), ranks=(i,)))
    return hits


def rrf_weights(
    n_legs: int, *, k: float, weights: Iterable[float] | None, normalize: bool
) -> list[float]:
    """Validate ``Rrf`` parameters and return the weights Chroma would receive.

    Args:
        n_legs: How many ranks the ``Rrf`` fuses.
        k: Its smoothing constant.
        weights: Its weights, or ``None`` for 1.0 each.
        normalize: Whether to divide the weights by their sum.

    Returns:
        One weight per leg, normalised if asked.

    Raises:
        InvalidInputError: (a ``ValueError``) What ``Rrf.to_dict()`` refuses, with its
            messages; and what it lets through: ``k`` or a weight that is not a number,
            NaN or infinite.
    """
    # Rrf.to_dict()'s checks, messages and order (chromadb 1.5.9), each followed by the
    # type and finiteness check it lacks, so a value both refuse gets chromadb's message.
    if n_legs == 0:
        raise InvalidInputError("RRF requires at least one rank")
    if not _is_number(k):
        raise InvalidInputError(f"k must be a positive number, got {k!r}")
    if k <= 0:
        raise InvalidInputError(f"k must be positive, got {k}")
    if not math.isfinite(k):
        raise InvalidInputError(f"k must be finite, got {k}")
    effective = [1.0] * n_legs
    if weights is not None:
        if isinstance(weights, (str, bytes, Mapping)) or not isinstance(weights, Iterable):
            raise InvalidInputError(f"weights must be a sequence of numbers, got {weights!r}")
        # A list, so that a numpy array is judged by its items, not its truth value.
        given = list(weights)
        if len(given) != n_legs:
            raise InvalidInputError(
                f"Number of weights ({len(given)}) must match number of ranks ({n_legs})"
            )
        if not all(_is_number(w) for w in given):
            raise InvalidInputError(f"weights must be numbers, got {given!r}")
        if any(w < 0.0 for w in given):
            raise InvalidInputError("All weights must be non-negative")
        if not all(math.isfinite(w) for w in given):
            raise InvalidInputError(f"weights must be finite, got {given!r}")
        effective = [float(w) for w in given]
    if normalize:
        weight_sum = sum(effective)
        if weight_sum == 0:
            raise InvalidInputError("Sum of weights must be positive when normalize=True")
        effective = [w / weight_sum for w in effective]
    return effective


def _is_number(value: object) -> bool:
    # numbers.Real covers int, float and numpy's scalars; bool is an int but never a weight.
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_))


def _candidates(
    legs: Sequence[RankedLeg],
    positions: Sequence[Mapping[str, int]],
    defaults: Sequence[float | None],
) -> list[str]:
    # RankDomain::merge: the records scored are those of every default-less leg (their
    # intersection), or, when every leg has a default, those of any leg (their union).
    required = [i for i, default in enumerate(defaults) if default is None]
    if required:
        first, *rest = required
        return [rid for rid in legs[first].ids if all(rid in positions[i] for i in rest)]
    union: dict[str, None] = {}
    for leg in legs:
        union.update(dict.fromkeys(leg.ids))
    return list(union)


def _total_order(value: float) -> float:
    # Rust sorts with f32::total_cmp; for the non-NaN values RRF produces (a zero
    # denominator needs a negative default) that is plain float order. NaN goes last.
    return math.inf if math.isnan(value) else value


def _as_client_float(value: np.float32) -> float:
    # The server serialises the f32 in its shortest decimal form and the Python client
    # parses that into a float; numpy prints f32 the same shortest way. The mapping is
    # monotonic, so order is unchanged.
    return float(str(np.float32(value)))
