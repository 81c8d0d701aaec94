"""HybridCollection on real embedded Chroma, with the local /embed_sparse server (BM25)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.execution.expression import K, Knn, Rrf, Search, Val

from chroma_sparse_ef import AuthenticationError, ChromaSparseEmbeddingFunction, InvalidInputError
from chroma_sparse_ef.hybrid import (
    HybridCollection,
    HybridLayoutError,
    UnsupportedSearchError,
)
from tests.integration.chroma_doubles import HashEmbedding

DIMS = 64

pytestmark = pytest.mark.filterwarnings(
    "ignore:The EmbeddingFunction class does not implement name:DeprecationWarning"
)

DOCS = {
    "d1": "Reciprocal rank fusion merges ranked lists from several retrievers",
    "d2": "SPLADE learns sparse lexical vectors over the BERT vocabulary",
    "d3": "Dense embeddings capture meaning; sparse ones match exact terms",
    "d4": "Chroma stores documents, metadata and embeddings in collections",
    "d5": "The error code E1234 appears when the disk is full",
    "d6": "Cooking pasta needs salted boiling water and patience",
}
META = {
    "d1": {"topic": "search", "year": 2009},
    "d2": {"topic": "search", "year": 2021},
    "d3": {"topic": "search", "year": 2023},
    "d4": {"topic": "db", "year": 2023},
    "d5": {"topic": "ops", "year": 2020},
    "d6": {"topic": "food", "year": 2019},
}


@pytest.fixture
def sparse_ef(embed_server_url: str) -> Iterator[ChromaSparseEmbeddingFunction]:
    """A sparse function on the local server, asking for labels."""
    with ChromaSparseEmbeddingFunction(base_url=embed_server_url, fetch_labels=True) as ef:
        yield ef


@pytest.fixture
def client(tmp_path: Path) -> Any:
    """A PersistentClient in a fresh directory."""
    return chromadb.PersistentClient(str(tmp_path / "db"))


def open_docs(client: Any, sparse_ef: Any, name: str = "docs") -> HybridCollection:
    return HybridCollection.get_or_create(
        client, name, sparse_embedding_function=sparse_ef, embedding_function=HashEmbedding()
    )


@pytest.fixture
def docs(client: Any, sparse_ef: Any) -> HybridCollection:
    """A persistent hybrid collection holding DOCS."""
    collection = open_docs(client, sparse_ef)
    collection.add(ids=list(DOCS), documents=list(DOCS.values()), metadatas=list(META.values()))
    return collection


def test_hybrid_search_ranks_exact_term_match_first_and_reports_both_ranks(
    docs: HybridCollection,
) -> None:
    """A query naming a rare term puts its document first, with dense and sparse ranks."""
    results = docs.search("error code E1234", limit=3)
    assert results.backend == "local"
    top = results[0]
    assert top.id == "d5"
    assert top.sparse_rank == 0
    assert top.dense_rank is not None
    assert top.document == DOCS["d5"]
    assert top.metadata == META["d5"]
    assert top.score is not None
    assert top.score < 0
    assert "e1234" in [label.lower() for label in top.matched_labels]


def test_hybrid_scores_follow_chroma_rrf_formula(docs: HybridCollection) -> None:
    """Each hybrid score is -(1/(k+dense_rank) + 1/(k+sparse_rank)), missing rank = limit."""
    results = docs.search("sparse lexical vectors", limit=6, k=60, candidate_limit=4)
    for hit in results:
        dense = 4 if hit.dense_rank is None else hit.dense_rank
        sparse = 4 if hit.sparse_rank is None else hit.sparse_rank
        expected = -(
            np.float32(1) / np.float32(60 + dense) + np.float32(1) / np.float32(60 + sparse)
        )
        assert hit.score == pytest.approx(float(expected), rel=1e-6)
    assert results.scores == sorted(results.scores)  # type: ignore[type-var]


def test_dense_mode_scores_are_distances_in_collection_order(docs: HybridCollection) -> None:
    """Dense mode returns collection.query's order and distances, with no sparse rank."""
    results = docs.search("sparse vectors", mode="dense", limit=3)
    raw = docs.collection.query(query_texts=["sparse vectors"], n_results=3)
    assert results.ids == raw["ids"][0]
    assert results.scores == pytest.approx(raw["distances"][0], rel=1e-6)
    assert all(hit.sparse_rank is None and hit.dense_rank == i for i, hit in enumerate(results))


def test_sparse_mode_scores_are_one_minus_dot_with_matching_terms(docs: HybridCollection) -> None:
    """Sparse mode scores 1 - dot product and explains each hit by its matching labels."""
    results = docs.search("pasta boiling water", mode="sparse", limit=2)
    top = results[0]
    assert top.id == "d6"
    dot = sum(m.contribution for m in top.matches)
    assert top.score == pytest.approx(1.0 - dot, rel=1e-5)
    assert {"pasta", "water"} <= {label.lower() for label in top.matched_labels}
    assert top.dense_rank is None


def test_where_filter_applies_to_both_legs(docs: HybridCollection) -> None:
    """A where filter keeps out records that would otherwise win either leg."""
    results = docs.search("error code E1234", where={"topic": "search"}, limit=6)
    assert results.ids
    assert set(results.ids) <= {"d1", "d2", "d3"}
    results = docs.search("pasta", where=K("year") >= 2021, mode="sparse")
    assert results.ids == []


def test_search_object_runs_locally_with_documented_subset(docs: HybridCollection) -> None:
    """A chromadb Search with Rrf over two Knns, where, limit and select runs locally."""
    search = (
        Search()
        .where(K("topic") == "search")
        .rank(
            Rrf(
                [
                    Knn(query="sparse terms", return_rank=True, limit=10, default=10.0),
                    Knn(
                        query="sparse terms",
                        key="sparse_embedding",
                        return_rank=True,
                        limit=10,
                        default=10.0,
                    ),
                ],
                weights=[0.3, 0.7],
            )
        )
        .limit(2)
        .select(K.DOCUMENT, "year")
    )
    results = docs.search(search)
    assert len(results) == 2
    assert all(hit.metadata is not None and set(hit.metadata) == {"year"} for hit in results)
    assert all(hit.score is None for hit in results)  # score not selected


def test_unsupported_search_expression_names_what_is_unsupported(docs: HybridCollection) -> None:
    """Arithmetic over ranks is refused with a message naming the expression."""
    search = Search().rank(Knn(query="x") * 0.5 + Val(1.0))
    with pytest.raises(UnsupportedSearchError, match="not supported locally"):
        docs.search(search)
    with pytest.raises(UnsupportedSearchError, match="other_key"):
        docs.search(Search().rank(Knn(query="x", key="other_key")))


def test_update_document_reembeds_sparse_vector(docs: HybridCollection) -> None:
    """Updating a document changes what the sparse leg finds."""
    docs.search("anything", mode="sparse")  # build the index first
    docs.update(ids=["d6"], documents=["Zanzibar spice markets"])
    assert docs.search("zanzibar", mode="sparse").ids == ["d6"]
    assert "d6" not in docs.search("pasta", mode="sparse").ids


def test_upsert_and_delete_keep_index_in_step(docs: HybridCollection) -> None:
    """Upserted records become searchable; deleted ones disappear from both legs."""
    docs.search("anything")
    docs.upsert(ids=["d7", "d1"], documents=["Quokka photos from Rottnest", DOCS["d1"]])
    assert docs.search("quokka", mode="sparse").ids == ["d7"]
    docs.delete(ids=["d7"])
    assert "d7" not in docs.search("quokka").ids
    docs.delete(where={"topic": "food"})
    assert docs.count() == 5
    assert "d6" not in docs.search("pasta boiling water").ids


def test_metadata_update_merges_and_hides_sparse_keys(docs: HybridCollection) -> None:
    """Metadata-only updates keep the stored vector; get never shows the hidden keys."""
    docs.update(ids=["d5"], metadatas=[{"severity": "high"}])
    got = docs.get(ids=["d5"])
    assert got["metadatas"] == [{"topic": "ops", "year": 2020, "severity": "high"}]
    raw = docs.collection.get(ids=["d5"])["metadatas"][0]
    assert raw["sparse_embedding"].startswith("spv1:")
    assert docs.search("E1234", mode="sparse").ids[0] == "d5"


def test_reopen_by_name_in_new_client_searches_without_reembedding(
    tmp_path: Path, docs: HybridCollection, sparse_ef: ChromaSparseEmbeddingFunction
) -> None:
    """HybridCollection.get rebuilds the sparse function from stored config; no doc re-embedded."""
    expected = docs.search("error code E1234", limit=4)
    docs.close()
    client = chromadb.PersistentClient(str(tmp_path / "db"))
    reopened = HybridCollection.open(client, "docs", embedding_function=HashEmbedding())
    assert isinstance(reopened.sparse_embedding_function, ChromaSparseEmbeddingFunction)
    function = reopened.sparse_embedding_function
    before = function.usage.texts if hasattr(function.usage, "texts") else None
    results = reopened.search("error code E1234", limit=4)
    assert results.ids == expected.ids
    assert [h.score for h in results] == [h.score for h in expected]
    if before is not None:
        assert function.usage.texts - before == 1  # only the query


def test_reopen_in_new_process_same_path(
    tmp_path: Path, docs: HybridCollection, embed_server_url: str
) -> None:
    """A new Python process opens the collection by name and gets the same ranking."""
    expected = docs.search("sparse lexical vectors", limit=3).ids
    script = textwrap.dedent(
        f"""
        import chromadb, chroma_sparse_ef
        from chroma_sparse_ef.hybrid import HybridCollection
        from tests.integration.test_hybrid_local import HashEmbedding
        client = chromadb.PersistentClient({str(tmp_path / "db")!r})
        docs = HybridCollection.open(client, "docs", embedding_function=HashEmbedding())
        print(",".join(docs.search("sparse lexical vectors", limit=3).ids))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=str(Path(__file__).resolve().parents[2]),
        timeout=120,
    )
    assert out.stdout.strip().splitlines()[-1].split(",") == expected


def test_external_add_through_raw_collection_is_embedded_and_found(
    docs: HybridCollection,
) -> None:
    """A record added by other code, without a sparse vector, is embedded on the next search."""
    docs.search("anything")
    docs.collection.add(ids=["x1"], documents=["Wombats dig burrows"])
    assert docs.search("wombats burrows", mode="sparse").ids == ["x1"]
    assert docs.collection.get(ids=["x1"])["metadatas"][0]["sparse_embedding"].startswith("spv1:")


def test_external_document_update_is_detected(docs: HybridCollection) -> None:
    """A document changed by other code is re-embedded, not searched with its old vector."""
    docs.search("anything")
    docs.collection.update(ids=["d6"], documents=["Narwhal tusks are teeth"])
    assert docs.search("narwhal", mode="sparse").ids == ["d6"]
    assert "d6" not in docs.search("pasta boiling", mode="sparse").ids


def test_external_delete_is_detected(docs: HybridCollection) -> None:
    """A record deleted by other code never comes back from the sparse leg."""
    docs.search("anything")
    docs.collection.delete(ids=["d5"])
    assert "d5" not in docs.search("E1234 error code").ids


def test_ephemeral_client_detects_external_writes_via_count_and_candidates(
    sparse_ef: ChromaSparseEmbeddingFunction,
) -> None:
    """On EphemeralClient, external adds, deletes and doc updates of candidates are caught."""
    client = chromadb.EphemeralClient()
    name = f"eph-{uuid.uuid4().hex[:8]}"
    docs = open_docs(client, sparse_ef, name)
    docs.add(ids=list(DOCS), documents=list(DOCS.values()), metadatas=list(META.values()))
    assert docs.search("E1234", mode="sparse").ids == ["d5"]
    docs.collection.add(ids=["x1"], documents=["E1234 again in the logs"])
    assert set(docs.search("E1234", mode="sparse").ids) == {"d5", "x1"}
    docs.collection.update(ids=["d5"], documents=["disk full"])
    assert docs.search("E1234", mode="sparse").ids == ["x1"]
    docs.collection.delete(ids=["x1"])
    assert docs.search("E1234", mode="sparse").ids == []
    client.delete_collection(name)


def test_records_without_documents_are_dense_only(docs: HybridCollection) -> None:
    """A record added with only an embedding has no sparse vector but ranks densely."""
    vector = HashEmbedding()(["error code"])[0]
    docs.add(ids=["e1"], embeddings=[vector.tolist()])
    results = docs.search("error code", limit=10)
    hit = next(h for h in results if h.id == "e1")
    assert hit.sparse_rank is None
    assert hit.dense_rank is not None


def test_reserved_metadata_key_is_refused_before_any_write(docs: HybridCollection) -> None:
    """User metadata may not use the sparse key or its hash key; nothing is written."""
    with pytest.raises(InvalidInputError, match="reserves"):
        docs.add(ids=["bad"], documents=["x"], metadatas=[{"sparse_embedding": "y"}])
    assert docs.get(ids=["bad"])["ids"] == []


def test_invalid_input_raises_before_any_write(docs: HybridCollection) -> None:
    """Mismatched lengths, duplicate ids and missing documents raise InvalidInputError."""
    with pytest.raises(InvalidInputError):
        docs.add(ids=["a", "b"], documents=["only one"])
    with pytest.raises(InvalidInputError):
        docs.add(ids=["a", "a"], documents=["x", "y"])
    with pytest.raises(InvalidInputError, match="no document and no embedding"):
        docs.add(ids=["a"])
    with pytest.raises(InvalidInputError):
        docs.search("")
    with pytest.raises(InvalidInputError):
        docs.search("x", mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        docs.delete()
    assert docs.count() == len(DOCS)


def test_sparse_failure_writes_nothing(client: Any, embed_server_factory: Any) -> None:
    """If the sparse endpoint fails, the add raises and the collection is unchanged."""
    server = embed_server_factory(api_key="right")
    ef = ChromaSparseEmbeddingFunction(base_url=server.url, api_key="wrong", max_retries=0)
    collection = open_docs(client, ef, "failing")
    with pytest.raises(AuthenticationError):
        collection.add(ids=["a"], documents=["hello"])
    assert collection.count() == 0


def test_get_of_plain_collection_is_refused(client: Any) -> None:
    """Opening a collection that was not created as hybrid says so."""
    client.create_collection("plain", embedding_function=HashEmbedding())
    with pytest.raises(HybridLayoutError, match="not a hybrid collection"):
        HybridCollection.open(client, "plain", embedding_function=HashEmbedding())


def test_unregistered_function_name_asks_to_import(client: Any, sparse_ef: Any) -> None:
    """A stored function name chromadb does not know gives an error naming the import."""
    import json

    from chroma_sparse_ef.hybrid._stored import CONFIG_METADATA_KEY

    layout = {"format": 1, "sparse_key": "sparse_embedding", "name": "nope", "config": {}}
    client.create_collection(
        "alien",
        embedding_function=HashEmbedding(),
        metadata={CONFIG_METADATA_KEY: json.dumps(layout)},
    )
    with pytest.raises(HybridLayoutError, match="import chroma_sparse_ef"):
        HybridCollection.open(client, "alien", embedding_function=HashEmbedding())


def test_large_add_is_chunked_by_max_batch_size(
    client: Any, sparse_ef: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes bigger than the client's max batch size go in several Chroma calls."""
    monkeypatch.setattr(client, "get_max_batch_size", lambda: 7)
    collection = open_docs(client, sparse_ef, "chunked")
    calls: list[int] = []
    original = collection.collection.add

    def spy(**kwargs: Any) -> None:
        calls.append(len(kwargs["ids"]))
        original(**kwargs)

    monkeypatch.setattr(collection.collection, "add", spy)
    ids = [f"r{i}" for i in range(20)]
    collection.add(ids=ids, documents=[f"record number {i}" for i in range(20)], progress=True)
    assert calls == [7, 7, 6]
    assert collection.count() == 20
    assert collection.search("number", mode="sparse", limit=20).ids


def test_own_writes_keep_the_index_without_a_reload(docs: HybridCollection) -> None:
    """Writes through HybridCollection update the cache in place: the next search reuses it."""
    docs.search("anything")
    backend: Any = docs._backend
    index = backend.index
    docs.add(ids=["n1"], documents=["Okapi live in the Congo"])
    docs.update(ids=["d1"], metadatas=[{"topic": "fusion"}])
    docs.delete(ids=["d2"])
    assert docs.search("okapi", mode="sparse").ids == ["n1"]
    assert backend.index is index


def test_offset_and_limit_page_through_fused_results(docs: HybridCollection) -> None:
    """offset skips ranked results exactly as slicing the full ranking would."""
    everything = docs.search("sparse dense search", limit=6).ids
    assert docs.search("sparse dense search", limit=2, offset=2).ids == everything[2:4]


def test_weights_shift_hybrid_ranking_towards_a_leg(docs: HybridCollection) -> None:
    """With all weight on the sparse leg, hybrid order follows the sparse ranks."""
    results = docs.search("pasta error code", weights=(0.0, 1.0), limit=3)
    ranks = [hit.sparse_rank for hit in results if hit.sparse_rank is not None]
    assert ranks == sorted(ranks)
