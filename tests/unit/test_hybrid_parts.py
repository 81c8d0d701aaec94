"""HybridCollection's pure parts: stored layout, write input, matching terms, results."""

from __future__ import annotations

import json
from pathlib import Path

import chromadb
import numpy as np
import pytest

from chroma_sparse_ef import InvalidInputError
from chroma_sparse_ef.hybrid import SearchHit, SearchResults, TermMatch
from chroma_sparse_ef.hybrid._results import matching_terms
from chroma_sparse_ef.hybrid._stored import (
    CONFIG_METADATA_KEY,
    HybridLayoutError,
    StoredConfig,
    document_hash,
    rebuild_sparse_function,
    strip_hidden,
)
from chroma_sparse_ef.hybrid._watch import SqliteWatermark
from chroma_sparse_ef.hybrid._writes import WriteBatch

RESERVED = ("sparse_embedding", "sparse_embedding__doc", "sparse_embedding__pending")


def test_stored_config_round_trips_through_collection_metadata() -> None:
    """The layout written to metadata reads back identically."""
    stored = StoredConfig(name="chroma_sparse_ef", config={"model": "m"}, sparse_key="sp")
    assert StoredConfig.from_metadata({CONFIG_METADATA_KEY: stored.to_json()}) == stored
    assert StoredConfig.from_metadata({"other": 1}) is None


def test_newer_layout_format_is_refused() -> None:
    """A layout from a newer package version is refused, not misread."""
    raw = json.dumps({"format": 99, "name": "x", "config": {}, "sparse_key": "s"})
    with pytest.raises(HybridLayoutError, match="newer"):
        StoredConfig.from_metadata({CONFIG_METADATA_KEY: raw})


def test_malformed_layout_is_refused() -> None:
    """Garbage under the reserved key is a clear error."""
    with pytest.raises(HybridLayoutError, match="malformed"):
        StoredConfig.from_metadata({CONFIG_METADATA_KEY: "{not json"})


def test_rebuild_by_name_uses_chromadb_registry() -> None:
    """A registered name is rebuilt from its config; an unknown one names the import."""
    from chroma_sparse_ef import ChromaSparseEmbeddingFunction

    config = ChromaSparseEmbeddingFunction(base_url="http://127.0.0.1:1").get_config()
    function = rebuild_sparse_function("chroma_sparse_ef", config)
    assert function.name() == "chroma_sparse_ef"
    with pytest.raises(HybridLayoutError, match="import chroma_sparse_ef"):
        rebuild_sparse_function("missing", {})


def test_strip_hidden_removes_reserved_keys_and_empties_to_none() -> None:
    """Hidden keys never leave; a metadata left empty becomes None."""
    assert strip_hidden({"a": 1, "sparse_embedding": "spv1:"}, RESERVED) == {"a": 1}
    assert strip_hidden({"sparse_embedding__doc": "h"}, RESERVED) is None
    assert strip_hidden(None, RESERVED) is None


def test_document_hash_is_short_and_stable() -> None:
    """The document hash is 16 hex characters and depends only on the text."""
    assert document_hash("abc") == document_hash("abc") != document_hash("abd")
    assert len(document_hash("abc")) == 16


def test_write_batch_accepts_single_items_like_chroma() -> None:
    """One id and one document are accepted as Chroma accepts them."""
    batch = WriteBatch.parse(
        "add", ids="a", documents="text", reserved=RESERVED, needs_vectors=True
    )
    assert batch.ids == ["a"]
    assert batch.documents == ["text"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ids": ["a", "b"], "documents": ["x"]}, "Invalid add input"),
        ({"ids": ["a"], "documents": [3]}, "Invalid add input"),
        ({"ids": ["a"]}, "no document and no embedding"),
        ({"ids": ["a"], "documents": ["x"], "metadatas": [{"sparse_embedding": 1}]}, "reserves"),
        ({"ids": [], "documents": []}, "Invalid add input"),
    ],
)
def test_write_batch_refuses_bad_input(kwargs: dict[str, object], message: str) -> None:
    """Bad write input raises InvalidInputError naming the problem."""
    with pytest.raises(InvalidInputError, match=message):
        WriteBatch.parse("add", reserved=RESERVED, needs_vectors=True, **kwargs)  # type: ignore[arg-type]


def test_matching_terms_lists_shared_terms_by_contribution() -> None:
    """Shared terms come with the query's labels, largest contribution first."""
    matches = matching_terms(
        np.array([3, 7, 9]),
        np.array([1.0, 2.0, 0.5]),
        ["c", "g", "i"],
        np.array([1, 3, 7]),
        np.array([4.0, 1.0, 1.0]),
    )
    assert [m.label for m in matches] == ["g", "c"]
    assert matches[0] == TermMatch(
        index=7, label="g", query_weight=2.0, document_weight=1.0, contribution=2.0
    )


def test_search_results_behave_as_a_sequence() -> None:
    """Results index, iterate and expose ids, documents and scores."""
    results = SearchResults(
        hits=(SearchHit(id="a", score=-0.1, document="x"), SearchHit(id="b", score=0.2)),
        backend="local",
    )
    assert len(results) == 2
    assert results[1].id == "b"
    assert results.ids == ["a", "b"]
    assert results.documents == ["x", None]
    assert [hit.id for hit in results] == ["a", "b"]


def test_sqlite_watermark_moves_on_every_write_and_only_for_its_collection(tmp_path: Path) -> None:
    """The watermark rises by one per record written to its collection, not to others."""
    client = chromadb.PersistentClient(str(tmp_path))
    mine = client.create_collection("mine", embedding_function=None)
    other = client.create_collection("other", embedding_function=None)
    watermark = SqliteWatermark.open(client, str(mine.id))
    assert watermark is not None
    start = watermark.read()
    mine.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
    assert watermark.read() == start + 2
    mine.update(ids=["a"], metadatas=[{"x": 1}])
    assert watermark.read() == start + 3
    other.add(ids=["z"], embeddings=[[1.0, 0.0]])
    assert watermark.read() == start + 3
    watermark.close()


def test_no_watermark_for_ephemeral_client() -> None:
    """An in-memory client has no sqlite file to watch."""
    client = chromadb.EphemeralClient()
    collection = client.get_or_create_collection("eph-watch", embedding_function=None)
    assert SqliteWatermark.open(client, str(collection.id)) is None
    client.delete_collection("eph-watch")


def test_changes_since_a_watermark_come_from_the_log_with_deletes(tmp_path: Path) -> None:
    """The log names each record written since, by its last operation, for one collection."""
    client = chromadb.PersistentClient(str(tmp_path))
    mine = client.create_collection("mine", embedding_function=None)
    other = client.create_collection("other", embedding_function=None)
    mine.add(ids=["a", "b", "c"], embeddings=[[1.0, 0.0]] * 3)
    watermark = SqliteWatermark.open(client, str(mine.id))
    assert watermark is not None
    since = watermark.read()
    mine.upsert(ids=["a", "d"], embeddings=[[0.0, 1.0]] * 2)
    mine.delete(ids=["b"])
    mine.add(ids=["b"], embeddings=[[1.0, 1.0]])  # re-added: its last write is an add
    mine.delete(ids=["c"])
    other.add(ids=["z"], embeddings=[[1.0, 0.0]])
    changes = watermark.changes(since, watermark.read())
    assert changes is not None
    assert sorted(changes.upserted) == ["a", "b", "d"]
    assert changes.deleted == ("c",)
    watermark.close()


def test_changes_after_a_log_purge_come_from_record_sequence_numbers(tmp_path: Path) -> None:
    """With the history purged, changed records are still named; deletes are left open."""
    client = chromadb.PersistentClient(str(tmp_path))
    mine = client.create_collection(
        "mine", embedding_function=None, metadata={"hnsw:sync_threshold": 10, "hnsw:batch_size": 10}
    )
    mine.add(ids=[f"r{i}" for i in range(5)], embeddings=[[1.0, 0.0]] * 5)
    watermark = SqliteWatermark.open(client, str(mine.id))
    assert watermark is not None
    since = watermark.read()
    mine.add(ids=[f"n{i}" for i in range(30)], embeddings=[[0.0, 1.0]] * 30)
    mine.delete(ids=["r0"])
    changes = watermark.changes(since, watermark.read())
    assert changes is not None
    assert sorted(changes.upserted) == sorted(f"n{i}" for i in range(30))
    assert changes.deleted is None
    present = watermark.present_ids()
    assert present is not None
    assert "r0" not in present
    assert "r1" in present
    watermark.close()


def test_changes_from_an_unknown_layout_are_none() -> None:
    """A database without Chroma's tables gives no changes, so the caller reloads."""
    import sqlite3

    watermark = SqliteWatermark(sqlite3.connect(":memory:"), "segment", "collection")
    assert watermark.changes(0, 5) is None
    assert watermark.present_ids() is None


def test_background_embedding_sets_aside_only_the_refused_texts() -> None:
    """A refused request is split until the bad texts stand alone; the rest is embedded."""
    from chromadb.api.types import SparseVector

    from chroma_sparse_ef import InvalidRequestError, ServiceError
    from chroma_sparse_ef.hybrid._ingest import embed_or_set_aside

    calls: list[int] = []

    def function(texts: list[str]) -> list[SparseVector]:
        calls.append(len(texts))
        if any("bad" in t for t in texts):
            raise InvalidRequestError("text too long (413)", status_code=413)
        return [SparseVector(indices=[len(t)], values=[1.0]) for t in texts]

    ids = [f"r{i}" for i in range(8)]
    texts = [f"text {i}" for i in range(8)]
    texts[5] = "bad one"
    vectors, aside = embed_or_set_aside(function, ids, texts)
    assert sorted(vectors) == [rid for rid in ids if rid != "r5"]
    assert list(aside.reasons) == ["r5"]
    assert "413" in aside.reasons["r5"]
    assert calls[0] == 8

    def down(texts: list[str]) -> list[SparseVector]:
        raise ServiceError("could not connect")

    vectors, aside = embed_or_set_aside(down, ids[:3], texts[:3])
    assert vectors == {}
    assert set(aside.reasons) == {"r0", "r1", "r2"}
    assert "ServiceError" in aside.reasons["r0"]


def test_another_packages_function_error_sets_aside_only_the_failing_texts() -> None:
    """A third-party function's RuntimeError (chromadb's own SPLADE function raises one for
    any failure) never escapes a background refresh: the batch is split down to the text
    it fails on, which is set aside, and the rest is embedded."""
    from chromadb.api.types import SparseVector

    from chroma_sparse_ef.hybrid._ingest import embed_or_set_aside

    def function(texts: list[str]) -> list[SparseVector]:
        if any("bad" in t for t in texts):
            raise RuntimeError("Failed to get embeddings: 400")
        return [SparseVector(indices=[len(t)], values=[1.0]) for t in texts]

    ids = [f"r{i}" for i in range(6)]
    texts = [f"text {i}" for i in range(6)]
    texts[2] = "bad text"
    vectors, aside = embed_or_set_aside(function, ids, texts)
    assert sorted(vectors) == [rid for rid in ids if rid != "r2"]
    assert list(aside.reasons) == ["r2"]
    assert aside.reasons["r2"].startswith("RuntimeError")


def test_ingest_writes_bounded_chunks_in_order_and_stops_at_a_failure() -> None:
    """Chunks never exceed WRITE_CHUNK or the batch size; a failure keeps earlier chunks."""
    from chroma_sparse_ef import InvalidRequestError
    from chroma_sparse_ef.hybrid._ingest import WRITE_CHUNK, WriteSummary, ingest

    class Writer:
        def __init__(self, fail_at: str | None) -> None:
            self.fail_at = fail_at
            self.written: list[list[str]] = []

        def write_chunk(self, op: str, part: WriteBatch) -> WriteSummary:
            if self.fail_at in part.ids:
                raise InvalidRequestError("refused")
            self.written.append(part.ids)
            return WriteSummary(written=len(part.ids), embedded=len(part.ids) - 1, skipped=1)

    n = WRITE_CHUNK * 2 + 5
    batch = WriteBatch(
        ids=[f"r{i}" for i in range(n)], documents=["x"] * n, metadatas=None, embeddings=None
    )
    writer = Writer(fail_at=None)
    summary = ingest("upsert", batch, writer, chunk_size=10**6, progress=False)
    assert [len(ids) for ids in writer.written] == [WRITE_CHUNK, WRITE_CHUNK, 5]
    assert summary == WriteSummary(written=n, embedded=n - 3, skipped=3, ignored=0)

    small = Writer(fail_at=None)
    ingest("upsert", batch.select(range(25)), small, chunk_size=10, progress=False)
    assert [len(ids) for ids in small.written] == [10, 10, 5]

    failing = Writer(fail_at=f"r{WRITE_CHUNK + 3}")
    with pytest.raises(InvalidRequestError):
        ingest("upsert", batch, failing, chunk_size=10**6, progress=False)
    assert failing.written == [batch.ids[:WRITE_CHUNK]]
