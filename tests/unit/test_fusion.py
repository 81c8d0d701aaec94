"""RRF fusion reproduces Chroma's Rrf: formula, missing records, weights, f32 ties."""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import re
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from chromadb import Knn, Rrf

from chroma_sparse_ef import InvalidInputError
from chroma_sparse_ef.hybrid import _fusion
from chroma_sparse_ef.hybrid._fusion import (
    FusedHit,
    RankedLeg,
    rrf_fuse,
    rrf_weights,
    single_leg_hits,
)

f32 = np.float32


def leg(*ids: str) -> RankedLeg:
    return RankedLeg(ids=ids)


def by_id(hits: list[FusedHit]) -> dict[str, FusedHit]:
    return {hit.id: hit for hit in hits}


# --- A reference: the server's RankDomain evaluation of Rrf.to_dict(), in f32 ----------
# Written from rust/worker/src/execution/operators/rank.rs, independently of _fusion.


def _merge(left: Any, right: Any, op: Any) -> Any:
    (ls, ld), (rs, rd) = left, right
    if ld is not None and rd is not None:
        ids = ls.keys() | rs.keys()
        return {i: op(ls.get(i, ld), rs.get(i, rd)) for i in ids}, op(ld, rd)
    if ld is not None:
        return {i: op(ls.get(i, ld), v) for i, v in rs.items()}, None
    if rd is not None:
        return {i: op(v, rs.get(i, rd)) for i, v in ls.items()}, None
    return {i: op(ls[i], rs[i]) for i in ls.keys() & rs.keys()}, None


def _eval(expr: Mapping[str, Any], results: list[list[str]]) -> Any:
    ((op, body),) = expr.items()
    if op == "$val":
        return {}, f32(body)
    if op == "$knn":
        ids = results.pop(0)
        support = {i: f32(n) for n, i in enumerate(ids)}
        default = body.get("default")
        return support, None if default is None else f32(default)
    if op in ("$sum", "$mul"):
        acc: Any = ({}, f32(0.0 if op == "$sum" else 1.0))
        fn = (lambda a, b: f32(a + b)) if op == "$sum" else (lambda a, b: f32(a * b))
        for child in body:
            acc = _merge(acc, _eval(child, results), fn)
        return acc
    if op == "$div":
        left = _eval(body["left"], results)
        return _merge(left, _eval(body["right"], results), lambda a, b: f32(a / b))
    raise AssertionError(op)


def reference(rrf: Rrf, results: list[list[str]]) -> dict[str, float]:
    support, _ = _eval(rrf.to_dict(), list(results))
    return {i: float(v) for i, v in support.items()}


# --- The formula ---------------------------------------------------------------------


def test_docs_example_scores_and_order() -> None:
    """The hybrid-search docs' A (ranks 0, 2) and B (ranks 1, 0): B scores lower and wins."""
    hits = rrf_fuse([leg("A", "B", "C"), leg("B", "x", "A")])
    assert [h.id for h in hits] == ["B", "A"]
    # -(1/61 + 1/60) and -(1/60 + 1/62), each term and the sum rounded to f32.
    assert hits[0].score == -0.03306011
    assert hits[1].score == -0.032795697
    assert hits[0].score == pytest.approx(-(1 / 61 + 1 / 60), rel=1e-7)
    assert hits[1].score == pytest.approx(-(1 / 60 + 1 / 62), rel=1e-7)
    assert hits[0].ranks == (1, 0)
    assert hits[1].ranks == (0, 2)


def test_single_leg_rrf_scores_minus_one_over_k_plus_rank() -> None:
    """One leg: score is -1/(k + rank) with 0-based ranks."""
    hits = rrf_fuse([leg("a", "b")], k=10)
    assert [(h.id, h.score) for h in hits] == [("a", -0.1), ("b", float(str(-f32(1) / f32(11))))]
    assert hits[1].score == pytest.approx(-1 / 11, rel=1e-7)


def test_custom_k_changes_the_scores() -> None:
    """k is added to each rank before taking the reciprocal."""
    hits = by_id(rrf_fuse([leg("a"), leg("a")], k=1))
    assert hits["a"].score == -2.0


# --- Missing records and defaults -----------------------------------------------------


def test_without_defaults_only_records_in_every_leg_are_scored() -> None:
    """default=None on both Knns keeps the intersection, as the ranking docs say."""
    hits = rrf_fuse([leg("a", "b", "c"), leg("c", "d", "a")])
    assert sorted(h.id for h in hits) == ["a", "c"]


def test_disjoint_legs_without_defaults_give_nothing() -> None:
    """No record in both legs, no defaults: an empty result, not an error."""
    assert rrf_fuse([leg("a"), leg("b")]) == []


def test_default_is_used_as_the_missing_rank() -> None:
    """A record missing from a leg with default=1000 scores w/(k+1000) for that leg."""
    hits = by_id(rrf_fuse([leg("a", "b"), leg("b")], defaults=[1000, 1000]))
    assert hits["a"].ranks == (0, None)
    assert hits["a"].score == float(str(-(f32(1) / f32(60) + f32(1) / f32(1060))))
    assert hits["a"].score == pytest.approx(-(1 / 60 + 1 / 1060), rel=1e-7)


def test_with_all_defaults_the_union_is_scored() -> None:
    """Every Knn has a default: a record in any leg is scored."""
    hits = rrf_fuse([leg("a"), leg("b")], defaults=[5, 5])
    assert sorted(h.id for h in hits) == ["a", "b"]


def test_mixed_defaults_keep_only_the_required_legs_records() -> None:
    """Leg 1 default=None, leg 2 default=1000: records of leg 1 only, leg 2 filled in."""
    hits = by_id(rrf_fuse([leg("a", "b"), leg("b", "z")], defaults=[None, 1000]))
    assert set(hits) == {"a", "b"}
    assert hits["a"].ranks == (0, None)
    assert hits["b"].ranks == (1, 0)


def test_records_in_no_leg_are_never_scored() -> None:
    """Defaults fill gaps; they do not invent records no Knn returned."""
    hits = rrf_fuse([leg("a"), leg()], defaults=[0, 0])
    assert [h.id for h in hits] == ["a"]


# --- Weights and normalize --------------------------------------------------------------


def test_weights_multiply_each_legs_term() -> None:
    """weights=[3, 1]: -(3/(60+r1) + 1/(60+r2))."""
    hit = rrf_fuse([leg("a"), leg("x", "a")], weights=[3, 1])[0]
    assert hit.score == float(str(-(f32(3) / f32(60) + f32(1) / f32(61))))
    assert hit.score == pytest.approx(-(3 / 60 + 1 / 61), rel=1e-7)


def test_normalize_divides_weights_by_their_sum() -> None:
    """normalize=True turns [3, 1] into [0.75, 0.25], as the docs' example says."""
    normalized = rrf_fuse([leg("a"), leg("a")], weights=[3, 1], normalize=True)[0]
    explicit = rrf_fuse([leg("a"), leg("a")], weights=[0.75, 0.25])[0]
    assert normalized == explicit
    assert rrf_weights(2, k=60, weights=[3, 1], normalize=True) == [0.75, 0.25]


def test_normalize_without_weights_gives_equal_halves() -> None:
    """No weights plus normalize: 1.0 each, then 0.5 each."""
    hit = rrf_fuse([leg("a"), leg("a")], normalize=True)[0]
    assert hit.score == float(str(-(f32(0.5) / f32(60) + f32(0.5) / f32(60))))


def test_zero_weight_leg_still_filters_but_adds_nothing() -> None:
    """A weight of 0 removes a leg's contribution, not its required membership."""
    hits = rrf_fuse([leg("a", "b"), leg("b")], weights=[1, 0])
    assert [(h.id, h.score) for h in hits] == [("b", float(str(-f32(1) / f32(61))))]


# --- Validation mirrors Rrf.to_dict() ---------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "n_legs"),
    [
        ({}, 0),
        ({"k": 0}, 2),
        ({"k": -5}, 2),
        ({"weights": [1.0]}, 2),
        ({"weights": [1.0, -0.5]}, 2),
        ({"weights": [0.0, 0.0], "normalize": True}, 2),
    ],
)
def test_invalid_parameters_raise_chromadbs_own_message(
    kwargs: dict[str, Any], n_legs: int
) -> None:
    """Each invalid Rrf raises ValueError with the message Rrf.to_dict() gives."""
    legs = [leg("a")] * n_legs
    try:
        Rrf(ranks=[Knn(query=[0.1], return_rank=True)] * n_legs, **kwargs).to_dict()
    except ValueError as exc:
        chroma_message = str(exc)
    else:
        pytest.fail("chromadb accepted the parameters")
    with pytest.raises(ValueError, match=f"^{re.escape(chroma_message)}$"):
        rrf_fuse(legs, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": math.nan}, "k must be finite, got nan"),
        ({"k": math.inf}, "k must be finite, got inf"),
        ({"k": "60"}, "k must be a positive number, got '60'"),
        ({"k": True}, "k must be a positive number, got True"),
        ({"k": None}, "k must be a positive number, got None"),
        ({"weights": [math.nan, 1.0]}, r"weights must be finite, got \[nan, 1.0\]"),
        ({"weights": [1.0, math.inf]}, r"weights must be finite, got \[1.0, inf\]"),
        ({"weights": [math.inf, 1.0], "normalize": True}, "weights must be finite"),
        ({"weights": ["1", 1.0]}, "weights must be numbers"),
        ({"weights": [True, 1.0]}, "weights must be numbers"),
        ({"weights": "ab"}, "weights must be a sequence of numbers"),
        ({"weights": 2.0}, "weights must be a sequence of numbers"),
    ],
)
def test_what_chromadb_lets_through_is_refused_naming_the_parameter(
    kwargs: dict[str, Any], message: str
) -> None:
    """NaN, infinity and non-numbers, which Rrf.to_dict() accepts, raise InvalidInputError."""
    with pytest.raises(InvalidInputError, match=f"^{message}"):
        rrf_fuse([leg("a"), leg("a")], **kwargs)


@pytest.mark.parametrize("k", [math.nan, math.inf])
def test_chromadb_itself_accepts_non_finite_k(k: float) -> None:
    """Why the finiteness check exists: chromadb 1.5.9 compiles Rrf(k=nan) without a word."""
    assert Rrf(ranks=[Knn(query=[0.1], return_rank=True)], k=k).to_dict()  # type: ignore[arg-type]


def test_invalid_parameters_are_invalid_input_errors_and_value_errors() -> None:
    """rrf_weights raises the package's InvalidInputError, which is also a ValueError."""
    with pytest.raises(InvalidInputError) as caught:
        rrf_weights(2, k=0, weights=None, normalize=False)
    assert isinstance(caught.value, ValueError)


def test_numpy_weights_and_k_are_numbers() -> None:
    """numpy scalars and arrays are accepted as Rrf parameters and give Python floats."""
    weights = rrf_weights(2, k=np.int64(60), weights=np.array([1.0, 3.0]), normalize=True)  # type: ignore[arg-type]
    assert weights == [0.25, 0.75]
    assert all(type(w) is float for w in weights)


def test_defaults_must_be_one_per_leg() -> None:
    """A defaults list of the wrong length is refused."""
    with pytest.raises(ValueError, match="defaults"):
        rrf_fuse([leg("a"), leg("a")], defaults=[None])


def test_empty_weights_list_means_equal_weights_like_chromadb() -> None:
    """weights=[] with one leg fails the length check, as in chromadb."""
    with pytest.raises(ValueError, match="must match"):
        rrf_fuse([leg("a")], weights=[])


@pytest.fixture
def duplicates_unreported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start the test as a fresh process would: no duplicate-id warning logged yet."""
    monkeypatch.setattr(_fusion, "_duplicates_reported", threading.Event())


@pytest.mark.usefixtures("duplicates_unreported")
def test_a_leg_listing_an_id_twice_keeps_the_first_occurrence_and_its_score(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Duplicate ids (chromadb HNSW with two writer processes) keep their first rank."""
    with caplog.at_level(logging.WARNING, logger=_fusion.__name__):
        ranked = RankedLeg(ids=("a", "b", "a", "c", "b"), scores=(0.1, 0.2, 0.3, 0.4, 0.5))
    assert ranked.ids == ("a", "b", "c")
    assert ranked.scores == (0.1, 0.2, 0.4)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "2 id(s) twice" in record.getMessage()
    assert "two processes write one PersistentClient path" in record.getMessage()


@pytest.mark.usefixtures("duplicates_unreported")
def test_duplicate_ids_are_logged_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    """Every later search of the same damaged index stays quiet after the first warning."""
    with caplog.at_level(logging.WARNING, logger=_fusion.__name__):
        for _ in range(3):
            RankedLeg(ids=("x", "x"))
    assert len(caplog.records) == 1


@pytest.mark.usefixtures("duplicates_unreported")
def test_fusing_a_leg_with_a_duplicate_id_ranks_it_once() -> None:
    """rrf_fuse over a leg that repeated an id scores that record once, at its first rank."""
    hits = rrf_fuse([leg("a", "b", "a"), leg("b", "a")], k=60)
    assert [hit.id for hit in hits] == ["a", "b"]
    assert by_id(hits)["a"].ranks == (0, 1)
    assert by_id(hits)["b"].ranks == (1, 0)


def test_a_leg_without_duplicates_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """The warning is about duplicates only."""
    with caplog.at_level(logging.WARNING, logger=_fusion.__name__):
        RankedLeg(ids=("a", "b"))
    assert caplog.records == []


def test_a_legs_scores_must_match_its_ids() -> None:
    """Raw scores, when given, are one per id."""
    with pytest.raises(ValueError, match="1 ids but 2 scores"):
        RankedLeg(ids=("a",), scores=(0.1, 0.2))


# --- Ties ----------------------------------------------------------------------------


def test_exact_ties_break_by_id_without_insertion_order() -> None:
    """Ranks (0, 1) and (1, 0) tie; without insertion order the smaller id comes first."""
    hits = rrf_fuse([leg("b", "a"), leg("a", "b")])
    assert hits[0].score == hits[1].score
    assert [h.id for h in hits] == ["a", "b"]


def test_ties_break_by_insertion_order_like_chromas_offset_ids() -> None:
    """Given insertion order, the earlier-inserted record wins a tie; unlisted ids go last."""
    hits = rrf_fuse(
        [leg("b", "a", "c"), leg("a", "b", "c")],
        defaults=[9, 9],
        insertion_order={"b": 0, "a": 1},
    )
    assert [h.id for h in hits] == ["b", "a", "c"]


def test_ties_are_judged_in_f32_like_the_server() -> None:
    """1/60 + 1/100 and 2/75 differ in f64 but tie in f32, so insertion order decides."""
    dense = RankedLeg(ids=("p", *(f"d{i}" for i in range(14)), "q"))
    sparse = RankedLeg(ids=(*(f"s{i}" for i in range(15)), "q", *(f"t{i}" for i in range(24)), "p"))
    assert (dense.ids.index("p"), sparse.ids.index("p")) == (0, 40)
    assert (dense.ids.index("q"), sparse.ids.index("q")) == (15, 15)
    assert (1 / 60 + 1 / 100) != (1 / 75 + 1 / 75)
    hits = by_id(rrf_fuse([dense, sparse]))
    assert hits["p"].score == hits["q"].score
    ordered = rrf_fuse([dense, sparse], insertion_order={"q": 0, "p": 1})
    assert [h.id for h in ordered] == ["q", "p"]


# --- Agreement with the server's evaluation of the compiled expression -------------------


@pytest.mark.parametrize("seed", range(20))
def test_matches_a_reference_evaluation_of_the_compiled_rrf(seed: int) -> None:
    """Random legs, weights, k and defaults: same records, same f32 scores as RankDomain."""
    rng = random.Random(seed)
    pool = [f"r{i}" for i in range(40)]
    n_legs = rng.choice([1, 2, 3])
    results = [rng.sample(pool, rng.randint(0, 25)) for _ in range(n_legs)]
    defaults = [rng.choice([None, 10, 1000.0, 3.5]) for _ in range(n_legs)]
    weights = rng.choice([None, [round(rng.uniform(0, 3), 3) for _ in range(n_legs)]])
    normalize = rng.random() < 0.5 and weights is not None and sum(weights) > 0
    k = rng.choice([1, 60, 7.5])
    rrf = Rrf(
        ranks=[Knn(query=[0.1], return_rank=True, limit=30, default=d) for d in defaults],
        k=k,  # type: ignore[arg-type]
        weights=weights,
        normalize=normalize,
    )
    expected = reference(rrf, results)
    hits = rrf_fuse(
        [RankedLeg(ids=tuple(r)) for r in results],
        k=k,
        weights=weights,
        normalize=normalize,
        defaults=defaults,
    )
    assert {h.id for h in hits} == set(expected)
    for hit in hits:
        assert hit.score == float(str(f32(expected[hit.id])))
    scores = [h.score for h in hits]
    assert scores == sorted(scores)


# --- A Knn alone ---------------------------------------------------------------------


def test_single_leg_hits_score_by_measure() -> None:
    """A lone Knn is scored by its measure (rounded to f32), in its own order."""
    hits = single_leg_hits(RankedLeg(ids=("a", "b"), scores=(0.1, 0.25)))
    assert [(h.id, h.score, h.ranks) for h in hits] == [("a", 0.1, (0,)), ("b", 0.25, (1,))]


def test_single_leg_hits_score_by_rank_with_return_rank() -> None:
    """return_rank=True scores a lone Knn by 0-based position."""
    hits = single_leg_hits(RankedLeg(ids=("a", "b")), return_rank=True)
    assert [h.score for h in hits] == [0.0, 1.0]


def test_single_leg_hits_need_scores_without_return_rank() -> None:
    """Without return_rank the measures are the scores, so they must be given."""
    with pytest.raises(ValueError, match="pass scores"):
        single_leg_hits(RankedLeg(ids=("a",)))


def test_fused_hits_are_frozen() -> None:
    """FusedHit is immutable."""
    hit = FusedHit(id="a", score=-0.1, ranks=(0,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        hit.score = 0.0  # type: ignore[misc]
