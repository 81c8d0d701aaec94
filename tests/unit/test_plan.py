"""Search <-> LocalPlan translation, and the native Search built for Chroma Cloud."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chromadb.api.models.CollectionCommon import CollectionCommon
from chromadb.api.types import (
    Documents,
    Schema,
    SparseEmbeddingFunction,
    SparseVector,
    SparseVectorIndexConfig,
    SparseVectors,
    validate_where,
    validate_where_document,
)
from chromadb.execution.expression import And, Eq, GroupBy, K, Knn, MinK, Or, Rrf, Search, Val

from chroma_sparse_ef.hybrid._defaults import DEFAULT_CANDIDATE_LIMIT
from chroma_sparse_ef.hybrid._fusion import RankedLeg, rrf_fuse
from chroma_sparse_ef.hybrid._native_search import build_native_search
from chroma_sparse_ef.hybrid._plan import (
    KnnLeg,
    LocalPlan,
    RrfSpec,
    Selection,
    UnsupportedSearchError,
    plan_from_search,
    plan_from_text,
)

SPARSE = "sparse_embedding"


def plan(search: Search) -> LocalPlan:
    return plan_from_search(search, sparse_key=SPARSE)


def normalized(payload: dict[str, Any]) -> dict[str, Any]:
    """Search.to_dict() with the select keys (a set in chromadb) in a fixed order."""
    payload["select"]["keys"] = sorted(payload["select"]["keys"])
    return payload


def knn_dict(key: str, limit: int, default: float | None, rank: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"query": "q", "key": key, "limit": limit}
    if default is not None:
        body["default"] = default
    if rank:
        body["return_rank"] = True
    return {"$knn": body}


def rrf_term(weight: float, k: int, knn: dict[str, Any]) -> dict[str, Any]:
    return {"$div": {"left": {"$val": weight}, "right": {"$sum": [{"$val": k}, knn]}}}


# --- build_native_search ---------------------------------------------------------------


def test_hybrid_search_is_rrf_over_dense_and_sparse_knn_with_return_rank() -> None:
    """Default hybrid: Rrf(k=60) over two return_rank Knns of 100, missing rank = 100."""
    search = build_native_search("q", sparse_key=SPARSE, where={"lang": "en"})
    assert normalized(search.to_dict()) == {
        "filter": {"lang": {"$eq": "en"}},
        "rank": {
            "$mul": [
                {"$val": -1},
                {
                    "$sum": [
                        rrf_term(1.0, 60, knn_dict("#embedding", 100, 100.0, True)),
                        rrf_term(1.0, 60, knn_dict(SPARSE, 100, 100.0, True)),
                    ]
                },
            ]
        },
        "group_by": {},
        "limit": {"offset": 0, "limit": 10},
        "select": {"keys": ["#document", "#metadata", "#score"]},
    }


def test_hybrid_search_passes_weights_k_limits_and_missing_rank() -> None:
    """Weights are normalised by Rrf; each leg has its own limit; missing_rank sets default."""
    search = build_native_search(
        "q",
        sparse_key=SPARSE,
        limit=5,
        offset=20,
        weights=[3, 1],
        normalize=True,
        k=10,
        candidate_limit=50,
        sparse_candidate_limit=200,
        missing_rank=1000,
        select=[K.DOCUMENT, "title"],
    )
    assert normalized(search.to_dict()) == {
        "filter": None,
        "rank": {
            "$mul": [
                {"$val": -1},
                {
                    "$sum": [
                        rrf_term(0.75, 10, knn_dict("#embedding", 50, 1000, True)),
                        rrf_term(0.25, 10, knn_dict(SPARSE, 200, 1000, True)),
                    ]
                },
            ]
        },
        "group_by": {},
        "limit": {"offset": 20, "limit": 5},
        "select": {"keys": ["#document", "title"]},
    }


def test_missing_rank_none_keeps_chromas_default_of_requiring_both_legs() -> None:
    """missing_rank=None leaves default unset on both Knns."""
    search = build_native_search("q", sparse_key=SPARSE, missing_rank=None)
    assert plan(search).legs[0].default is None
    assert plan(search).legs[1].default is None


@pytest.mark.parametrize(("mode", "key"), [("dense", "#embedding"), ("sparse", SPARSE)])
def test_single_mode_is_one_knn_scored_by_distance(mode: Any, key: str) -> None:
    """dense/sparse mode: one Knn on that key, no return_rank, limit = candidate_limit."""
    search = build_native_search("q", sparse_key=SPARSE, mode=mode, candidate_limit=30)
    assert search.to_dict()["rank"] == knn_dict(key, 30, None, False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "both"}, "mode must be"),
        ({"limit": 0}, "limit must be a positive integer"),
        ({"offset": -1}, "offset must be a non-negative integer"),
        ({"candidate_limit": 0}, "candidate_limit must be a positive integer"),
        ({"sparse_candidate_limit": -3}, "sparse_candidate_limit must be"),
        ({"k": 0}, "k must be positive"),
        ({"weights": [1.0]}, "Number of weights"),
        ({"weights": [1.0, -1.0]}, "non-negative"),
        ({"weights": [0.0, 0.0], "normalize": True}, "Sum of weights"),
        ({"mode": "dense", "weights": [1.0, 1.0]}, "hybrid mode only"),
        ({"sparse_key": "#embedding"}, "sparse_key must be a metadata key"),
        ({"sparse_key": ""}, "sparse_key must be a metadata key"),
    ],
)
def test_build_native_search_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    """Bad arguments raise ValueError before any Search reaches a server."""
    arguments: dict[str, Any] = {"sparse_key": SPARSE, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_native_search("q", **arguments)


class _QuerySparse(SparseEmbeddingFunction[Documents]):
    """A sparse function whose query vector is recognisable."""

    def __init__(self) -> None:
        pass

    def __call__(self, input: Documents) -> SparseVectors:
        return [SparseVector(indices=[1], values=[1.0]) for _ in input]

    def embed_query(self, input: Documents) -> SparseVectors:
        return [SparseVector(indices=[7], values=[0.5]) for _ in input]

    @staticmethod
    def name() -> str:
        return "test_query_sparse"

    def get_config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> _QuerySparse:
        return _QuerySparse()


class _CloudCollectionStub:
    """Just enough of a Cloud collection to run chromadb's own client-side query embedding."""

    _embed_search_string_queries = CollectionCommon._embed_search_string_queries
    _embed_rank_string_queries = CollectionCommon._embed_rank_string_queries
    _embed_knn_string_queries = CollectionCommon._embed_knn_string_queries
    _sparse_embed = CollectionCommon._sparse_embed

    def __init__(self) -> None:
        config = SparseVectorIndexConfig(embedding_function=_QuerySparse(), source_key="#document")
        self.schema = Schema().create_index(config=config, key=SPARSE)

    def _embed(self, input: Any, is_query: bool = False) -> Any:
        return [np.array([0.25, 0.75], dtype=np.float32)]


def embed_like_cloud_client(search: Search) -> Search:
    """Embed a Search's text queries with chromadb's own client-side code."""
    stub: Any = _CloudCollectionStub()
    embedded: Search = stub._embed_search_string_queries(search)
    return embedded


def test_cloud_client_embeds_each_leg_with_its_keys_function() -> None:
    """chromadb embeds the dense leg densely and the sparse leg with embed_query (str key)."""
    embedded = embed_like_cloud_client(build_native_search("q", sparse_key=SPARSE))
    dense, sparse = plan(embedded).legs
    assert dense.query == (0.25, 0.75)
    assert sparse.query == SparseVector(indices=[7], values=[0.5])


def test_a_key_object_on_the_sparse_leg_would_be_embedded_densely_by_chromadb() -> None:
    """Why the sparse leg uses a str key: chromadb 1.5.9 embeds K(sparse) with the dense EF."""
    embedded = embed_like_cloud_client(Search().rank(Knn(query="q", key=K(SPARSE))))
    assert embedded.to_dict()["rank"]["$knn"]["query"] == [0.25, 0.75]


# --- plan_from_search: what is supported ------------------------------------------------


def test_native_hybrid_search_round_trips_into_a_local_plan() -> None:
    """build_native_search's output becomes legs, Rrf, filter, paging and selection."""
    search = build_native_search(
        "q",
        sparse_key=SPARSE,
        where=(K("lang") == "en") & (K("year") >= 2020),
        limit=5,
        offset=2,
        weights=[2.0, 1.0],
    )
    where: Any = {"$and": [{"lang": {"$eq": "en"}}, {"year": {"$gte": 2020}}]}
    assert plan(search) == LocalPlan(
        legs=(
            KnnLeg("dense", "#embedding", "q", DEFAULT_CANDIDATE_LIMIT, 100.0, True),
            KnnLeg("sparse", SPARSE, "q", DEFAULT_CANDIDATE_LIMIT, 100.0, True),
        ),
        rrf=RrfSpec(k=60.0, weights=(2.0, 1.0)),
        where=where,
        limit=5,
        offset=2,
        select=Selection(document=True, metadata=True, score=True),
    )


def test_normalized_rrf_reports_the_weights_chroma_receives() -> None:
    """Rrf(normalize=True) arrives already normalised; the plan carries those weights."""
    rrf = Rrf(
        [Knn(query="q", return_rank=True), Knn(query="q", key=SPARSE, return_rank=True)],
        weights=[75, 25],
        normalize=True,
        k=100,
    )
    assert plan(Search().rank(rrf)).rrf == RrfSpec(k=100.0, weights=(0.75, 0.25))


def test_plan_weights_fuse_to_the_same_scores_as_the_rrf_parameters() -> None:
    """Fusing with the plan's weights (normalize=False) equals fusing with the Rrf's own."""
    rrf = Rrf(
        [Knn(query="q", return_rank=True), Knn(query="q", key=SPARSE, return_rank=True)],
        weights=[0.7, 0.3],
        normalize=True,
    )
    spec = plan(Search().rank(rrf)).rrf
    assert spec is not None
    legs = [RankedLeg(ids=("a", "b")), RankedLeg(ids=("b", "a"))]
    from_plan = rrf_fuse(legs, k=spec.k, weights=spec.weights)
    from_rrf = rrf_fuse(legs, k=rrf.k, weights=rrf.weights, normalize=True)
    assert from_plan == from_rrf


def test_rrf_over_one_knn_is_supported() -> None:
    """Rrf with a single rank compiles without a $sum; it still parses."""
    search = Search().rank(Rrf([Knn(query="q", key=SPARSE, return_rank=True)]))
    assert plan(search).rrf == RrfSpec(k=60.0, weights=(1.0,))
    assert plan(search).sparse is not None
    assert plan(search).dense is None


def test_a_hand_written_rrf_expression_is_recognised() -> None:
    """-(w/(k + knn)) written by hand is the same expression, so it is the same plan."""
    knn = Knn(query="q", return_rank=True)
    assert plan(Search().rank(-(0.5 / (60 + knn)))).rrf == RrfSpec(k=60.0, weights=(0.5,))


def test_a_single_knn_is_the_whole_rank() -> None:
    """One Knn with Chroma's defaults: limit 16, no default, distances."""
    result = plan(Search().rank(Knn(query="q")))
    assert result.legs == (KnnLeg("dense", "#embedding", "q"),)
    assert result.legs[0].limit == 16
    assert result.rrf is None


def test_no_rank_means_no_legs() -> None:
    """Search without rank: records in index order, a plain get."""
    result = plan(Search().limit(3))
    assert result.legs == ()
    assert result.rrf is None
    assert result.limit == 3


def test_search_without_limit_has_no_limit_and_returns_only_ids() -> None:
    """Defaults: no limit, offset 0, nothing selected."""
    result = plan(Search())
    assert (result.limit, result.offset, result.select) == (None, 0, Selection())


def test_precomputed_vectors_are_accepted_for_each_key() -> None:
    """A numpy dense vector on #embedding and a SparseVector on the sparse key."""
    sparse_vector = SparseVector(indices=[3, 9], values=[0.5, 0.25])
    rrf = Rrf(
        [
            Knn(query=np.array([0.5, 0.25], dtype=np.float32), return_rank=True),
            Knn(query=sparse_vector, key=SPARSE, return_rank=True),
        ]
    )
    dense, sparse = plan(Search().rank(rrf)).legs
    assert dense.query == (0.5, 0.25)
    assert sparse.query == sparse_vector


def test_a_search_built_from_dicts_gives_the_same_plan() -> None:
    """Search(rank=<dict>) and the equivalent objects translate identically."""
    objects = Search(where=K("a") == 1).rank(
        Rrf([Knn(query=[0.5, 0.5], return_rank=True), Knn(query=[1.0], return_rank=True)])
    )
    with pytest.raises(UnsupportedSearchError, match="Two Knn legs on '#embedding'"):
        plan(objects)
    objects = Search(where=K("a") == 1).rank(Knn(query=[0.5, 0.5], limit=7, default=3.0))
    from_dicts = Search(
        where={"a": 1}, rank={"$knn": {"query": [0.5, 0.5], "limit": 7, "default": 3.0}}
    )
    assert plan(objects) == plan(from_dicts)


def test_knn_key_given_as_a_key_object_is_read_by_name() -> None:
    """K(sparse_key) and the plain string name the same leg."""
    assert plan(Search().rank(Knn(query="q", key=K(SPARSE)))).legs[0].kind == "sparse"
    assert plan(Search().rank(Knn(query="q", key=K.EMBEDDING))).legs[0].kind == "dense"


# --- plan_from_search: filters -------------------------------------------------------


def test_document_contains_stays_in_where_even_under_or() -> None:
    """Embedded Chroma accepts #document $contains inside where, so it stays there."""
    where = (K.DOCUMENT.contains("x")) | (K("a") == 1)
    assert plan(Search().where(where)).where == {
        "$or": [{"#document": {"$contains": "x"}}, {"a": {"$eq": 1}}]
    }


def test_document_regex_moves_to_where_document() -> None:
    """$regex on #document is refused in where locally, so it goes to where_document."""
    where = (K("a") == 1) & K.DOCUMENT.regex("^x") & K.DOCUMENT.not_regex("y$")
    result = plan(Search().where(where))
    assert result.where == {"a": {"$eq": 1}}
    assert result.where_document == {"$and": [{"$regex": "^x"}, {"$not_regex": "y$"}]}


def test_id_filters_become_ids_and_intersect() -> None:
    """K.ID.is_in and K.ID == become ids=, intersected when there are several."""
    where = K.ID.is_in(["a", "b", "c"]) & (K.ID == "b") & (K("x") > 1)
    result = plan(Search().where(where))
    assert result.ids == ("b",)
    assert result.where == {"x": {"$gt": 1}}


def test_only_id_filters_leave_no_where() -> None:
    """A filter that is only K.ID.is_in leaves where and where_document empty."""
    result = plan(Search().where(K.ID.is_in(["a", "a", "b"])))
    assert (result.ids, result.where, result.where_document) == (("a", "b"), None, None)


def test_single_element_and_or_collapse() -> None:
    """A one-element $and/$or, which embedded Chroma refuses, becomes its element."""

    where = And([Or([Eq("a", 1)]), Eq("b", 2)])
    assert plan(Search().where(where)).where == {"$and": [{"a": {"$eq": 1}}, {"b": {"$eq": 2}}]}


def test_selection_reads_special_and_metadata_keys() -> None:
    """select() maps #-keys to flags and other names to sorted metadata keys; #id is implied."""
    selection = plan(Search().select(K.ID, K.EMBEDDING, K.SCORE, "year", "title")).select
    assert selection == Selection(embedding=True, score=True, metadata_keys=("title", "year"))
    assert selection.include == ["embeddings", "metadatas"]


def test_selection_include_lists_what_get_must_fetch() -> None:
    """include= holds documents, embeddings and metadatas as selected."""
    assert Selection(document=True, metadata=True).include == ["documents", "metadatas"]
    assert Selection(score=True).include == []


# --- plan_from_search: what is refused --------------------------------------------------

_DENSE = Knn(query="q", return_rank=True)
_SPARSE_KNN = Knn(query="q", key=SPARSE, return_rank=True)


@pytest.mark.parametrize(
    ("search", "message"),
    [
        (
            Search().rank(Knn(query="q", key="foo")),
            "Knn on key 'foo' is not supported locally: only '#embedding' and 'sparse_embedding'",
        ),
        (Search().rank(Knn(query="q") * 0.5 + Val(1.0)), "Rank expression '\\$sum'"),
        (Search().rank(Knn(query="q") - Knn(query="q", key=SPARSE)), "Rank expression '\\$sub'"),
        (Search().rank(abs(Knn(query="q"))), "Rank expression '\\$abs'"),
        (Search().rank(Val(1.0)), "Rank expression '\\$val'"),
        (
            Search().rank(Rrf([Knn(query="q"), _SPARSE_KNN])),
            "Rrf over Knn on '#embedding' without return_rank=True",
        ),
        (Search().rank(Rrf([_DENSE, _DENSE])), "Two Knn legs on '#embedding'"),
        (Search().rank(Rrf([_DENSE, Rrf([_SPARSE_KNN])])), "Rrf over a '\\$mul' rank"),
        (
            Search().rank(-(1.0 / (60 + _DENSE)) - (1.0 / (10 + _SPARSE_KNN))),
            "Rank expression '\\$sub'",
        ),
        (
            Search().rank(-((1.0 / (60 + _DENSE)) + (1.0 / (10 + _SPARSE_KNN)))),
            "different k",
        ),
        (
            Search().group_by(GroupBy(keys=K("c"), aggregate=MinK(keys=K.SCORE, k=1))),
            "group_by is not supported locally",
        ),
        (Search().where((K.ID == "a") | (K("x") == 1)), "A #id filter under \\|"),
        (Search().where(K.ID.not_in(["a"])), "Filter '\\$nin' on #id"),
        (Search().where(K.ID != "a"), "Filter '\\$ne' on #id"),
        (Search().where(K("title").regex("^a")), "'\\$regex' on metadata field 'title'"),
        (
            Search().where(K.DOCUMENT.regex("^a") | (K("x") == 1)),
            "'\\$regex' on #document under \\|",
        ),
        (Search().where(K.SCORE > 0.5), "Filters on '#score'"),
        (Search().where(Or([])), "'\\$or' needs a non-empty list"),
        (Search().where(And([])), "'\\$and' needs a non-empty list"),
        (Search().where(K.EMBEDDING == 1), "Filters on '#embedding'"),
        (
            Search().rank(Knn(query=SparseVector(indices=[1], values=[1.0]))),
            "Knn on '#embedding' needs text or a dense vector, got a sparse vector",
        ),
        (
            Search().rank(Knn(query=[0.1, 0.2], key=SPARSE)),
            "Knn on sparse key 'sparse_embedding' needs text or a SparseVector",
        ),
    ],
)
def test_unsupported_constructs_raise_naming_the_construct(search: Search, message: str) -> None:
    """Anything outside the local subset raises UnsupportedSearchError saying what it is."""
    with pytest.raises(UnsupportedSearchError, match=message):
        plan(search)


def test_unsupported_search_error_is_a_value_error() -> None:
    """Callers catching ValueError also catch UnsupportedSearchError."""
    assert issubclass(UnsupportedSearchError, ValueError)


@pytest.mark.parametrize(
    ("search", "message"),
    [
        (Search().rank(Knn(query="q", limit=0)), "Knn limit must be a positive integer"),
        (Search().rank(Knn(query="q", default="x")), "Knn default must be a finite number"),  # type: ignore[arg-type]
        (Search().rank(Knn(query="q", default=math.nan)), "Knn default must be a finite number"),
        (Search().rank(Rrf([_DENSE], k=0)), "k must be positive"),
        (Search().rank(Rrf([_DENSE], k=math.nan)), "k must be finite, got nan"),  # type: ignore[arg-type]
        (Search().rank(Rrf([_DENSE], k=math.inf)), "k must be finite, got inf"),  # type: ignore[arg-type]
        (Search().rank(Rrf([_DENSE], weights=[math.nan])), "weights must be finite"),
        (Search().rank(Rrf([_DENSE], weights=[math.inf])), "weights must be finite"),
    ],
)
def test_invalid_values_raise_value_error(search: Search, message: str) -> None:
    """Invalid values (not unsupported ones) raise a ValueError naming the parameter."""
    with pytest.raises(ValueError, match=message):
        plan(search)


@pytest.mark.parametrize("sparse_key", ["", "#embedding", "#document"])
def test_sparse_key_must_be_a_metadata_key(sparse_key: str) -> None:
    """The sparse key is a metadata key name, never a special #-key."""
    with pytest.raises(ValueError, match="sparse_key must be a metadata key"):
        plan_from_search(Search(), sparse_key=sparse_key)


# --- LocalPlan invariants --------------------------------------------------------------


def test_local_plan_refuses_several_legs_without_rrf() -> None:
    """Two legs need an Rrf to combine them."""
    legs = (KnnLeg("dense", "#embedding", "q"), KnnLeg("sparse", SPARSE, "q"))
    with pytest.raises(ValueError, match="need an Rrf"):
        LocalPlan(legs=legs)


def test_local_plan_refuses_weights_that_do_not_match_legs() -> None:
    """An Rrf carries exactly one weight per leg."""
    with pytest.raises(ValueError, match="one weight per leg"):
        LocalPlan(legs=(KnnLeg("dense", "#embedding", "q"),), rrf=RrfSpec(k=60, weights=(1, 1)))


def test_local_plan_refuses_two_legs_on_one_key() -> None:
    """At most one leg per key."""
    legs = (KnnLeg("dense", "#embedding", "q"), KnnLeg("dense", "#embedding", "r"))
    with pytest.raises(ValueError, match="one leg per key"):
        LocalPlan(legs=legs, rrf=RrfSpec(k=60, weights=(1, 1)))


def test_translated_filters_pass_embedded_chromas_validators() -> None:
    """where and where_document from the plan are accepted by chromadb's local validation."""
    where = (
        ((K("a") == 1) | K.DOCUMENT.contains("x"))
        & K.DOCUMENT.regex("^h")
        & K.DOCUMENT.not_contains("z")
        & K("tags").contains("t")
        & K("n").is_in([1, 2])
        & K.ID.is_in(["a"])
    )
    result = plan(Search().where(where))
    assert result.where is not None
    assert result.where_document is not None
    validate_where(result.where)
    validate_where_document(result.where_document)


# --- plan_from_text: a text query's plan, built from its arguments ----------------------

TEXT_SEARCHES: list[dict[str, Any]] = [
    {},
    {"mode": "dense"},
    {"mode": "sparse", "sparse_candidate_limit": 7},
    {"weights": [2, 1]},
    {"weights": (75.0, 25.0), "normalize": True},
    {"normalize": True},
    {"weights": np.array([0.3, 0.7]), "k": np.float64(7.5)},
    {"k": 1},
    {"candidate_limit": 5, "sparse_candidate_limit": 50},
    {"missing_rank": None},
    {"missing_rank": 1000},
    {"missing_rank": 0.5, "candidate_limit": 3},
    {"limit": np.int64(3), "offset": 4},
    {"where": {"lang": "en"}},
    {"where": {"$and": [{"lang": "en"}, {"year": {"$gte": 2020}}]}},
    {
        "where": (K("lang") == "en")
        & K.DOCUMENT.regex("^h")
        & K.DOCUMENT.contains("x")
        & K.ID.is_in(["a", "b"])
    },
    {"where": K.ID == "a", "mode": "sparse"},
    {"select": [K.DOCUMENT, "title", "#embedding"]},
    {"select": ()},
    {"select": ["title", "title", K.SCORE]},
]


@pytest.mark.parametrize("kwargs", TEXT_SEARCHES)
def test_plan_from_text_equals_the_plan_of_the_native_search(kwargs: dict[str, Any]) -> None:
    """Built from the arguments, the plan is the one the native Search translates to."""
    direct = plan_from_text("q", sparse_key=SPARSE, **kwargs)
    via_search = plan(build_native_search("q", sparse_key=SPARSE, **kwargs))
    assert direct == via_search


@pytest.mark.parametrize("seed", range(20))
def test_plan_from_text_equals_the_native_route_for_random_arguments(seed: int) -> None:
    """Random combinations of every argument give equal plans by both routes."""
    rng = np.random.default_rng(seed)
    mode = str(rng.choice(["hybrid", "dense", "sparse"]))
    kwargs: dict[str, Any] = {
        "mode": mode,
        "limit": int(rng.integers(1, 50)),
        "offset": int(rng.integers(0, 20)),
        "k": float(rng.choice([1, 60, 0.5, 1e6])),
        "candidate_limit": int(rng.integers(1, 500)),
        "sparse_candidate_limit": None if rng.random() < 0.5 else int(rng.integers(1, 500)),
        "missing_rank": rng.choice(np.array(["candidate_limit", None, 0, 250.5], dtype=object)),
        "where": None if rng.random() < 0.5 else {"year": {"$gt": int(rng.integers(0, 9))}},
    }
    if mode == "hybrid":
        kwargs["weights"] = None if rng.random() < 0.3 else list(rng.random(2) * 5)
        kwargs["normalize"] = bool(rng.random() < 0.5) and kwargs["weights"] is not None
    assert plan_from_text("q", sparse_key=SPARSE, **kwargs) == plan(
        build_native_search("q", sparse_key=SPARSE, **kwargs)
    )


def test_plan_from_text_hybrid_carries_the_weights_chroma_receives() -> None:
    """Normalised weights are divided in Python float, as Rrf.to_dict() divides them."""
    result = plan_from_text("q", sparse_key=SPARSE, weights=[1, 2], normalize=True, k=10)
    assert result.rrf == RrfSpec(k=10.0, weights=(1 / 3, 2 / 3))
    assert [leg.default for leg in result.legs] == [100.0, 100.0]
    assert all(leg.return_rank for leg in result.legs)


def test_plan_from_text_single_leg_is_scored_by_its_measure() -> None:
    """Dense or sparse mode is one Knn with no default and no return_rank, like Cloud's."""
    result = plan_from_text("q", sparse_key=SPARSE, mode="sparse", candidate_limit=9)
    assert result.legs == (KnnLeg("sparse", SPARSE, "q", 9),)
    assert result.rrf is None


def test_plan_from_text_refuses_filters_embedded_chroma_cannot_run() -> None:
    """A metadata regex is unsupported locally, as it is through plan_from_search."""
    with pytest.raises(UnsupportedSearchError, match="'\\$regex' on metadata field 'lang'"):
        plan_from_text("q", sparse_key=SPARSE, where=K("lang").regex("^e"))


def test_defaults_live_in_one_module() -> None:
    """_native_search, _plan and _fusion read their defaults from hybrid._defaults."""
    from chroma_sparse_ef.hybrid import _defaults, _fusion, _native_search
    from chroma_sparse_ef.hybrid import _plan as plan_module

    assert _fusion.DEFAULT_RRF_K is _defaults.DEFAULT_RRF_K
    assert plan_module.DEFAULT_CANDIDATE_LIMIT is _defaults.DEFAULT_CANDIDATE_LIMIT
    source = Path(_native_search.__file__).read_text()
    assert "from ._plan" not in source
