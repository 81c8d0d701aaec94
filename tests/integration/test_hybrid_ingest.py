"""HybridCollection writes on real embedded Chroma and the real local server: chunks,
skipping unchanged records, and records the service refuses written by other code."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import pytest

from chroma_sparse_ef import ChromaSparseEmbeddingFunction, InvalidRequestError
from chroma_sparse_ef.hybrid import HybridCollection, PendingRecord, WriteSummary
from chroma_sparse_ef.hybrid._local import LocalBackend
from chroma_sparse_ef.testing import run_local_server
from tests.integration.chroma_doubles import HashEmbedding

pytestmark = pytest.mark.filterwarnings(
    "ignore:The EmbeddingFunction class does not implement name:DeprecationWarning"
)

#: The longest text the test servers accept; a longer one gets 413.
MAX_CHARS = 200
LONG = "overflow " * 40  # 360 characters


class CountingDense(HashEmbedding):
    """HashEmbedding that counts the texts it embedded."""

    def __init__(self) -> None:
        super().__init__()
        self.texts = 0

    def __call__(self, input: Any) -> Any:
        self.texts += len(input)
        return super().__call__(input)


@pytest.fixture
def server_url(embed_server_factory: Any) -> str:
    """A local server refusing texts over MAX_CHARS with 413."""
    return str(embed_server_factory(max_text_chars=MAX_CHARS).url)


@pytest.fixture
def sparse_ef(server_url: str) -> Iterator[ChromaSparseEmbeddingFunction]:
    """A sparse function on that server, failing at once instead of retrying."""
    with ChromaSparseEmbeddingFunction(base_url=server_url, max_retries=0) as ef:
        yield ef


@pytest.fixture
def dense() -> CountingDense:
    """The counting dense function."""
    return CountingDense()


@pytest.fixture
def client(tmp_path: Path) -> Any:
    """A PersistentClient in a fresh directory."""
    return chromadb.PersistentClient(str(tmp_path / "db"))


def open_docs(client: Any, sparse_ef: Any, dense: Any, name: str = "docs") -> HybridCollection:
    return HybridCollection.get_or_create(
        client, name, sparse_embedding_function=sparse_ef, embedding_function=dense
    )


def texts(n: int, word: str = "record") -> list[str]:
    return [f"{word} number {i} about topic {i % 7}" for i in range(n)]


def test_rerunning_an_upsert_embeds_nothing_and_reports_it_skipped(
    client: Any, sparse_ef: ChromaSparseEmbeddingFunction, dense: CountingDense
) -> None:
    """An upsert of unchanged documents calls neither function and reports them skipped."""
    docs = open_docs(client, sparse_ef, dense)
    ids = [f"r{i}" for i in range(30)]
    first = docs.upsert(ids=ids, documents=texts(30))
    assert first == WriteSummary(written=30, embedded=30, skipped=0, ignored=0)
    sparse_texts, dense_texts = sparse_ef.usage.texts, dense.texts

    again = docs.upsert(ids=ids, documents=texts(30))

    assert again == WriteSummary(written=0, embedded=0, skipped=30, ignored=0)
    assert (sparse_ef.usage.texts, dense.texts) == (sparse_texts, dense_texts)
    assert docs.search("number 4", mode="sparse", limit=3).ids


def test_upsert_embeds_only_changed_documents_and_merges_new_metadata(
    client: Any, sparse_ef: ChromaSparseEmbeddingFunction, dense: CountingDense
) -> None:
    """One changed document of five is embedded; unchanged ones only get their metadata."""
    docs = open_docs(client, sparse_ef, dense)
    ids = [f"r{i}" for i in range(5)]
    docs.upsert(ids=ids, documents=texts(5), metadatas=[{"v": 1}] * 5)
    before = sparse_ef.usage.texts
    changed = texts(5)
    changed[2] = "a completely new text about quokkas"

    summary = docs.upsert(ids=ids, documents=changed, metadatas=[{"w": 2}] * 5)

    assert (summary.embedded, summary.skipped, summary.written) == (1, 4, 5)
    assert sparse_ef.usage.texts == before + 1
    got = docs.get(ids=ids)
    assert got["metadatas"] == [{"v": 1, "w": 2}] * 5
    assert docs.search("quokkas", mode="sparse", limit=1).ids == ["r2"]


def test_metadata_only_update_embeds_nothing(
    client: Any, sparse_ef: ChromaSparseEmbeddingFunction, dense: CountingDense
) -> None:
    """update() with metadata alone, or with the same document, calls neither function."""
    docs = open_docs(client, sparse_ef, dense)
    docs.add(ids=["a", "b"], documents=["alpha text", "beta text"])
    counts = (sparse_ef.usage.texts, dense.texts)

    docs.update(ids=["a"], metadatas=[{"tag": "x"}])
    summary = docs.update(ids=["b"], documents=["beta text"], metadatas=[{"tag": "y"}])

    assert summary.embedded == 0
    assert (sparse_ef.usage.texts, dense.texts) == counts
    assert docs.get(ids=["a", "b"])["metadatas"] == [{"tag": "x"}, {"tag": "y"}]


def test_add_of_existing_ids_embeds_nothing_and_counts_them_ignored(
    client: Any, sparse_ef: ChromaSparseEmbeddingFunction, dense: CountingDense
) -> None:
    """Chroma ignores an add of an existing id; so does the ingest, before embedding."""
    docs = open_docs(client, sparse_ef, dense)
    docs.add(ids=["a"], documents=["alpha"])
    before = sparse_ef.usage.texts
    summary = docs.add(ids=["a", "b"], documents=["changed alpha", "beta"])
    assert (summary.ignored, summary.embedded) == (1, 1)
    assert sparse_ef.usage.texts == before + 1


def test_a_refused_chunk_leaves_earlier_chunks_written_and_a_rerun_pays_only_the_rest(
    client: Any,
    sparse_ef: ChromaSparseEmbeddingFunction,
    dense: CountingDense,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks are written as they are embedded: a failure keeps the chunks before it."""
    monkeypatch.setattr(client, "get_max_batch_size", lambda: 10)
    docs = open_docs(client, sparse_ef, dense)
    ids = [f"r{i}" for i in range(35)]
    documents = texts(35)
    documents[23] = LONG  # in the third chunk of ten

    with pytest.raises(InvalidRequestError):
        docs.upsert(ids=ids, documents=documents)

    assert docs.count() == 20  # two whole chunks; nothing of the failing one
    stored = docs.collection.get(ids=ids[:20], include=["metadatas"])["metadatas"]
    assert all("sparse_embedding" in m for m in stored)
    before = sparse_ef.usage.texts
    documents[23] = "a shorter text"

    summary = docs.upsert(ids=ids, documents=documents)

    assert (summary.skipped, summary.embedded) == (20, 15)
    assert sparse_ef.usage.texts == before + 15
    assert docs.count() == 35


def test_progress_shows_one_bar_counting_records_written(
    client: Any,
    sparse_ef: ChromaSparseEmbeddingFunction,
    dense: CountingDense,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chunked write draws a single bar, with embedded and skipped counts."""
    monkeypatch.setattr(client, "get_max_batch_size", lambda: 10)
    docs = open_docs(client, sparse_ef, dense)
    docs.upsert(ids=[f"r{i}" for i in range(10)], documents=texts(10))
    capsys.readouterr()
    docs.upsert(ids=[f"r{i}" for i in range(25)], documents=texts(25), progress=True)
    err = capsys.readouterr().err
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    assert final.startswith("upsert: 100%")
    assert "25/25" in final
    assert "embedded=15" in final
    assert "skipped=10" in final
    assert "embedding" not in err  # no per-leg bars


def test_a_write_through_hybrid_collection_of_a_refused_text_raises(
    client: Any, sparse_ef: ChromaSparseEmbeddingFunction, dense: CountingDense
) -> None:
    """HybridCollection's own writes raise the typed error; nothing of the chunk is written."""
    docs = open_docs(client, sparse_ef, dense)
    with pytest.raises(InvalidRequestError, match="413"):
        docs.add(ids=["ok", "long"], documents=["fine", LONG])
    assert docs.count() == 0
    assert docs.pending() == []


def test_a_record_the_service_refuses_is_pending_and_search_keeps_working(
    client: Any,
    sparse_ef: ChromaSparseEmbeddingFunction,
    dense: CountingDense,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A raw add of a text over the server's limit is set aside, not fatal, in every mode."""
    docs = open_docs(client, sparse_ef, dense)
    docs.add(ids=[f"r{i}" for i in range(6)], documents=texts(6))
    docs.collection.add(ids=["long"], documents=[LONG], embeddings=dense([LONG]))

    with caplog.at_level(logging.WARNING, logger="chroma_sparse_ef.hybrid"):
        for mode in ("hybrid", "sparse", "dense"):
            caplog.clear()
            assert docs.search("record number", mode=mode, limit=10).ids  # type: ignore[arg-type]
            warnings = [r for r in caplog.records if "pending" in r.getMessage()]
            if mode == "dense":
                assert not any("'long'" in r.getMessage() for r in caplog.records)
            else:
                assert len(warnings) == 1
                assert "'long'" in warnings[0].getMessage()
                assert "413" in warnings[0].getMessage()

    (pending,) = docs.pending()
    assert isinstance(pending, PendingRecord)
    assert pending.id == "long"
    assert "413" in pending.reason
    assert "long" in docs.search("overflow", mode="dense", limit=10).ids
    hidden = docs.get(ids=["long"])["metadatas"][0]
    assert hidden is None  # the pending marker is reserved and stripped


def test_a_pending_record_whose_document_changes_is_embedded_on_catch_up(
    client: Any, sparse_ef: ChromaSparseEmbeddingFunction, dense: CountingDense
) -> None:
    """Another writer fixing the document makes the record searchable by its terms."""
    docs = open_docs(client, sparse_ef, dense)
    docs.add(ids=["a"], documents=["alpha"])
    docs.collection.add(ids=["long"], documents=[LONG], embeddings=dense([LONG]))
    docs.search("alpha", mode="dense")
    assert [p.id for p in docs.pending()] == ["long"]

    docs.collection.update(ids=["long"], documents=["short wombat"], embeddings=dense(["x"]))

    assert docs.search("wombat", mode="sparse", limit=1).ids == ["long"]
    assert docs.pending() == []


def test_an_unreachable_service_sets_records_aside_and_refresh_retries_them(
    client: Any, dense: CountingDense
) -> None:
    """Dense search works while the service is down; refresh() embeds once it is back."""
    with run_local_server() as probe:
        port = probe.port  # a port free again once the probe stops
    ef = ChromaSparseEmbeddingFunction(base_url=f"http://127.0.0.1:{port}", max_retries=0)
    docs = open_docs(client, ef, dense)
    docs.collection.add(ids=["raw"], documents=["kangaroo facts"], embeddings=dense(["k"]))

    assert docs.search("kangaroo", mode="dense").ids == ["raw"]
    (pending,) = docs.pending()
    assert pending.id == "raw"

    with run_local_server(port=port):
        docs.refresh()
        assert docs.pending() == []
        assert docs.search("kangaroo", mode="sparse").ids == ["raw"]


def test_catching_up_on_another_handle_reads_only_the_changed_records(
    client: Any, sparse_ef: ChromaSparseEmbeddingFunction, dense: CountingDense
) -> None:
    """Writes by another handle are applied from Chroma's log, without a reload."""
    docs = open_docs(client, sparse_ef, dense)
    docs.add(ids=[f"r{i}" for i in range(50)], documents=texts(50))
    docs.search("record", mode="sparse")
    backend = docs._backend
    assert isinstance(backend, LocalBackend)
    loads = _count_loads(backend)
    other = open_docs(chromadb.PersistentClient(_path(client)), sparse_ef, dense)

    other.upsert(ids=["new"], documents=["platypus"])
    other.update(ids=["r3"], documents=["echidna"])
    other.delete(ids=["r4"])
    other.collection.add(ids=["raw"], documents=["numbat"], embeddings=dense(["n"]))

    assert docs.search("platypus", mode="sparse", limit=1).ids == ["new"]
    assert docs.search("echidna", mode="sparse", limit=1).ids == ["r3"]
    assert docs.search("numbat", mode="sparse", limit=1).ids == ["raw"]
    assert "r4" not in docs.search("record number 4", mode="sparse", limit=60).ids
    assert loads() == 0


def test_catching_up_after_chroma_purged_its_log_uses_record_sequence_numbers(
    client: Any, sparse_ef: ChromaSparseEmbeddingFunction, dense: CountingDense
) -> None:
    """With the log purged, changes and deletes are still applied without a reload."""
    docs = HybridCollection.get_or_create(
        client,
        "purged",
        sparse_embedding_function=sparse_ef,
        embedding_function=dense,
        metadata={"hnsw:sync_threshold": 10, "hnsw:batch_size": 10},
    )
    docs.add(ids=[f"r{i}" for i in range(20)], documents=texts(20))
    docs.search("record", mode="sparse")
    backend = docs._backend
    assert isinstance(backend, LocalBackend)
    loads = _count_loads(backend)
    other = HybridCollection.open(
        chromadb.PersistentClient(_path(client)),
        "purged",
        embedding_function=dense,
        sparse_embedding_function=sparse_ef,
    )
    other.upsert(ids=[f"n{i}" for i in range(30)], documents=texts(30, "platypus"))
    other.delete(ids=["r1", "r2"])
    start = _log_start(client)
    assert start is not None
    assert start > 21

    hits = docs.search("platypus", mode="sparse", limit=40).ids
    assert sorted(hits) == sorted(f"n{i}" for i in range(30))
    assert not {"r1", "r2"} & set(docs.search("record", mode="sparse", limit=40).ids)
    assert loads() == 0


def _count_loads(backend: LocalBackend) -> Any:
    cache = backend.cache
    calls = {"n": 0}
    real = cache._read_collection

    def counting() -> Any:
        calls["n"] += 1
        return real()

    cache._read_collection = counting  # type: ignore[method-assign]
    return lambda: calls["n"]


def _path(client: Any) -> str:
    return str(client.get_settings().persist_directory)


def _log_start(client: Any) -> int | None:
    import sqlite3

    with sqlite3.connect(Path(_path(client)) / "chroma.sqlite3") as db:
        row = db.execute("SELECT MIN(seq_id) FROM embeddings_queue").fetchone()
    return None if row[0] is None else int(row[0])
