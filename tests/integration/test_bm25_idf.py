"""BM25 on embedded Chroma ranks as Chroma Cloud's ``bm25=True`` sparse index ranks.

Every expectation here is computed independently of the package, from Cloud's formula
(chroma-core/chroma ``rust/worker/src/execution/operators/idf.rs``): each query weight is
scaled by ``idf(t) = ln(1 + (n - n_t + 0.5) / (n_t + 0.5))`` in float32, with ``n`` the
records in the collection and ``n_t`` the records whose vector holds ``t``; the document
score is the dot product of the scaled query with the stored (float32) document vector.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.utils.embedding_functions import ChromaBm25EmbeddingFunction

from chroma_sparse_ef import ConfigurationError
from chroma_sparse_ef.hybrid import HybridCollection
from tests.integration.chroma_doubles import HashEmbedding

pytestmark = pytest.mark.filterwarnings(
    "ignore:The EmbeddingFunction class does not implement name:DeprecationWarning"
)

#: The issue's example: without IDF the document repeating a common word wins.
GLUON = {
    "rep": "the the the the the the mat",
    "gluon": "the gluon is small",
    "cat": "the cat sat on the mat",
    "dog": "the dog on the mat",
}

CORPUS = {
    "c1": "Reciprocal rank fusion merges ranked lists from several retrievers",
    "c2": "SPLADE learns sparse lexical vectors over the BERT vocabulary",
    "c3": "Dense embeddings capture meaning while sparse vectors match exact terms",
    "c4": "Chroma stores documents, metadata and embeddings in collections",
    "c5": "The error code E1234 appears when the disk is full",
    "c6": "Sparse retrieval with BM25 ranks documents by term frequency and rarity",
    "c7": "Hybrid search fuses dense and sparse rankings with reciprocal rank fusion",
    "c8": "Vectors in a collection are compared by cosine distance",
}


def expected_ranking(
    docs: dict[str, str], query: str, *, idf: bool, n_records: int | None = None
) -> list[tuple[str, float]]:
    """Cloud's ranking of ``docs`` for ``query``, computed from the formula alone."""
    ef = ChromaBm25EmbeddingFunction()
    vectors = {rid: ef([text])[0] for rid, text in docs.items()}
    q = ef.embed_query([query])[0]
    n = np.float32(len(docs) if n_records is None else n_records)
    weights: dict[int, np.float32] = {}
    for term, value in zip(q.indices, q.values, strict=True):
        w = np.float32(value)
        if idf:
            n_t = np.float32(sum(term in v.indices for v in vectors.values()))
            ratio = np.float32((n - n_t + np.float32(0.5)) / (n_t + np.float32(0.5)))
            w = np.float32(np.float32(np.log1p(np.float64(ratio))) * w)
        weights[term] = w
    scored = []
    for rid, v in vectors.items():
        shared = sorted(set(v.indices) & weights.keys())
        if not shared:
            continue
        doc = dict(zip(v.indices, v.values, strict=True))
        dot = sum(float(weights[t]) * float(np.float32(doc[t])) for t in shared)
        scored.append((rid, dot))
    scored.sort(key=lambda item: (-item[1], item[0]))
    return scored


def open_bm25(client: Any, name: str, **kwargs: Any) -> HybridCollection:
    return HybridCollection.get_or_create(
        client,
        name,
        sparse_embedding_function=ChromaBm25EmbeddingFunction(),
        embedding_function=HashEmbedding(),
        **kwargs,
    )


def sparse_ids_and_dots(collection: HybridCollection, query: str) -> list[tuple[str, float]]:
    results = collection.search(query, mode="sparse", limit=50)
    # A sparse Knn scores 1 - dot, as Chroma Cloud does.
    return [(hit.id, 1.0 - float(hit.score or 0.0)) for hit in results]


def assert_same_ranking(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [rid for rid, _ in got] == [rid for rid, _ in want]
    for (_, g), (_, w) in zip(got, want, strict=True):
        assert g == pytest.approx(w, rel=1e-5, abs=1e-5)


@pytest.fixture
def client(tmp_path: Path) -> Any:
    """A PersistentClient in a fresh directory."""
    return chromadb.PersistentClient(str(tmp_path / "db"))


def test_bm25_is_on_by_default_for_chromas_bm25_function_and_ranks_the_rare_term_first(
    client: Any,
) -> None:
    """With chromadb's BM25 function and no flag, IDF applies: the rare term's document wins."""
    collection = open_bm25(client, "gluon")
    collection.add(ids=list(GLUON), documents=list(GLUON.values()))
    assert collection.bm25 is True
    got = sparse_ids_and_dots(collection, "the gluon mat")
    assert got[0][0] == "gluon"
    assert_same_ranking(got, expected_ranking(GLUON, "the gluon mat", idf=True))


def test_bm25_false_ranks_by_raw_weights_as_before(client: Any) -> None:
    """bm25=False keeps the raw dot product: the repeated common word wins, as without IDF."""
    collection = open_bm25(client, "raw", bm25=False)
    collection.add(ids=list(GLUON), documents=list(GLUON.values()))
    assert collection.bm25 is False
    got = sparse_ids_and_dots(collection, "the gluon mat")
    want = expected_ranking(GLUON, "the gluon mat", idf=False)
    assert_same_ranking(got, want)
    assert got[0][0] == "rep"


@pytest.mark.parametrize(
    "query",
    ["sparse vectors", "reciprocal rank fusion", "dense sparse hybrid", "collection embeddings"],
)
def test_rankings_match_clouds_formula_before_and_after_deletes_and_upserts(
    client: Any, query: str
) -> None:
    """IDF follows the collection at once: deletes and upserts change n and n_t."""
    docs = dict(CORPUS)
    collection = open_bm25(client, "corpus")
    collection.add(ids=list(docs), documents=list(docs.values()))
    assert_same_ranking(
        sparse_ids_and_dots(collection, query), expected_ranking(docs, query, idf=True)
    )

    collection.delete(ids=["c6", "c8"])
    del docs["c6"], docs["c8"]
    assert_same_ranking(
        sparse_ids_and_dots(collection, query), expected_ranking(docs, query, idf=True)
    )

    changed = {"c1": "sparse sparse vectors everywhere", "c9": "a new sparse hybrid collection"}
    collection.upsert(ids=list(changed), documents=list(changed.values()))
    docs.update(changed)
    assert_same_ranking(
        sparse_ids_and_dots(collection, query), expected_ranking(docs, query, idf=True)
    )


def test_records_without_a_document_count_in_n(client: Any) -> None:
    """n is every record in the collection, as on Cloud, also those with no sparse vector."""
    collection = open_bm25(client, "with-embeddings-only")
    collection.add(ids=list(CORPUS), documents=list(CORPUS.values()))
    collection.add(ids=["e1", "e2", "e3"], embeddings=[[0.1] * 64, [0.2] * 64, [0.3] * 64])
    want = expected_ranking(CORPUS, "sparse vectors", idf=True, n_records=len(CORPUS) + 3)
    assert_same_ranking(sparse_ids_and_dots(collection, "sparse vectors"), want)


def test_reopening_with_another_explicit_bm25_value_is_a_configuration_error(client: Any) -> None:
    """The flag is part of the stored layout: a different explicit value is refused."""
    open_bm25(client, "fixed", bm25=True)
    with pytest.raises(ConfigurationError, match="bm25"):
        open_bm25(client, "fixed", bm25=False)
    assert open_bm25(client, "fixed").bm25 is True


def test_a_new_process_reopens_with_the_stored_flag_and_the_same_ranking(
    client: Any, tmp_path: Path
) -> None:
    """HybridCollection.get in another process restores bm25 and ranks identically."""
    collection = open_bm25(client, "reopen")
    collection.add(ids=list(CORPUS), documents=list(CORPUS.values()))
    collection.delete(ids=["c2"])
    here = sparse_ids_and_dots(collection, "sparse rank fusion")
    script = textwrap.dedent(
        f"""
        import json
        import chromadb
        import chroma_sparse_ef
        from chroma_sparse_ef.hybrid import HybridCollection
        from tests.integration.chroma_doubles import HashEmbedding

        client = chromadb.PersistentClient({str(tmp_path / "db")!r})
        c = HybridCollection.open(client, "reopen", embedding_function=HashEmbedding())
        hits = c.search("sparse rank fusion", mode="sparse", limit=50)
        print(json.dumps({{"bm25": c.bm25, "hits": [[h.id, 1.0 - h.score] for h in hits]}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    there = json.loads(out.stdout.strip().splitlines()[-1])
    assert there["bm25"] is True
    assert [rid for rid, _ in there["hits"]] == [rid for rid, _ in here]
    docs = {k: v for k, v in CORPUS.items() if k != "c2"}
    assert_same_ranking(
        [(rid, dot) for rid, dot in there["hits"]],
        expected_ranking(docs, "sparse rank fusion", idf=True),
    )


def test_matched_tokens_explain_the_idf_scaled_score(client: Any) -> None:
    """With include_tokens, each hit names its matched words, and their contributions
    (IDF-scaled query weight x document weight) add up to the dot product it ranked by."""
    collection = HybridCollection.get_or_create(
        client,
        "explained",
        sparse_embedding_function=ChromaBm25EmbeddingFunction(include_tokens=True),
        embedding_function=HashEmbedding(),
    )
    collection.add(ids=list(CORPUS), documents=list(CORPUS.values()))
    want = dict(expected_ranking(CORPUS, "sparse rank fusion", idf=True))
    hits = collection.search("sparse rank fusion", mode="sparse", limit=50)
    assert hits.ids
    for hit in hits:
        assert hit.matched_labels, hit.id
        assert set(hit.matched_labels) <= {"spars", "rank", "fusion"}
        total = sum(m.contribution for m in hit.matches)
        assert total == pytest.approx(want[hit.id], rel=1e-6)
