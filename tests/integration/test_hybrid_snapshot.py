"""The sparse index snapshot on a real PersistentClient: used when sound, never trusted blindly.

Every test compares search results against a cache read from Chroma itself (a cold open),
so a snapshot that changed a result fails it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import pytest

from chroma_sparse_ef import ChromaSparseEmbeddingFunction
from chroma_sparse_ef.hybrid import HybridCollection
from chroma_sparse_ef.hybrid._local import LocalBackend
from chroma_sparse_ef.hybrid._persist import CacheState, SnapshotStore
from chroma_sparse_ef.hybrid._snapshot import snapshot_path
from chroma_sparse_ef.hybrid._stored import CONFIG_METADATA_KEY
from tests.integration.chroma_doubles import HashEmbedding

pytestmark = pytest.mark.filterwarnings(
    "ignore:The EmbeddingFunction class does not implement name:DeprecationWarning"
)

ROOT = Path(__file__).resolve().parents[2]
QUERIES = ("kangaroo", "wombat burrow", "record 7", "platypus", "echidna spines 3")
WORDS = ("kangaroo", "wombat", "burrow", "platypus", "echidna", "spines", "record")

#: Opens the collection in a fresh process, searches, and says where the cache came from.
READER = textwrap.dedent(
    """
    import json, sys
    import chromadb
    from chroma_sparse_ef import ChromaSparseEmbeddingFunction
    from chroma_sparse_ef.hybrid import HybridCollection
    from tests.integration.chroma_doubles import HashEmbedding

    path, url, name = sys.argv[1], sys.argv[2], sys.argv[3]
    queries = json.loads(sys.argv[4])
    docs = HybridCollection.open(
        chromadb.PersistentClient(path), name, embedding_function=HashEmbedding(),
        sparse_embedding_function=ChromaSparseEmbeddingFunction(base_url=url),
    )
    out = {"results": [], "opened_from": None}
    for q in queries:
        for mode in ("sparse", "hybrid"):
            r = docs.search(q, mode=mode, limit=8)
            out["results"].append([r.ids, [round(s, 6) for s in r.scores]])
    out["opened_from"] = docs._backend.cache.opened_from
    out["pending"] = [p.id for p in docs.pending()]
    docs.close()
    print(json.dumps(out))
    """
)

#: Writes through HybridCollection and the raw collection, and never searches (so it
#: never builds or saves a cache of its own).
WRITER = textwrap.dedent(
    """
    import sys
    import chromadb
    from chroma_sparse_ef import ChromaSparseEmbeddingFunction
    from chroma_sparse_ef.hybrid import HybridCollection
    from tests.integration.chroma_doubles import HashEmbedding

    path, url, name = sys.argv[1], sys.argv[2], sys.argv[3]
    dense = HashEmbedding()
    docs = HybridCollection.open(
        chromadb.PersistentClient(path), name, embedding_function=dense,
        sparse_embedding_function=ChromaSparseEmbeddingFunction(base_url=url),
    )
    docs.upsert(ids=["new1", "new2"], documents=["platypus platypus", "echidna spines 3"])
    docs.upsert(ids=["d3"], documents=["platypus record changed"])
    docs.delete(ids=["d4", "d5"])
    docs.collection.add(ids=["raw1"], documents=["wombat burrow raw"],
                        embeddings=dense(["wombat burrow raw"]))
    """
)


def texts(n: int) -> list[str]:
    return [f"record {i} {WORDS[i % len(WORDS)]} {WORDS[(i * 3) % len(WORDS)]}" for i in range(n)]


@pytest.fixture
def sparse_ef(embed_server_url: str) -> Iterator[ChromaSparseEmbeddingFunction]:
    with ChromaSparseEmbeddingFunction(base_url=embed_server_url) as ef:
        yield ef


def make(path: Path, name: str, sparse_ef: ChromaSparseEmbeddingFunction, n: int = 60) -> None:
    """A hybrid collection of ``n`` records, searched once and closed (snapshot saved)."""
    docs = HybridCollection.get_or_create(
        chromadb.PersistentClient(str(path)),
        name,
        sparse_embedding_function=sparse_ef,
        embedding_function=HashEmbedding(),
        metadata={"hnsw:sync_threshold": 10, "hnsw:batch_size": 10},
    )
    docs.add(ids=[f"d{i}" for i in range(n)], documents=texts(n))
    docs.search("record", mode="sparse")
    docs.close()


def read(path: Path, url: str, name: str = "docs") -> dict[str, Any]:
    """Open and search in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", READER, str(path), url, name, json.dumps(QUERIES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "random"},
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def snapshot_of(path: Path, name: str = "docs") -> Path:
    collection = chromadb.PersistentClient(str(path)).get_collection(name)
    return snapshot_path(path, str(collection.id))


def stored_layout(path: Path, name: str = "docs") -> str:
    metadata = chromadb.PersistentClient(str(path)).get_collection(name).metadata or {}
    layout: str = metadata[CONFIG_METADATA_KEY]
    return layout


def store_of(path: Path, name: str = "docs", **change: Any) -> SnapshotStore:
    """The collection's snapshot store as LocalBackend makes it, or with one thing changed."""
    collection = chromadb.PersistentClient(str(path)).get_collection(name)
    args: dict[str, Any] = {
        "stored_layout": stored_layout(path, name),
        "sparse_key": json.loads(stored_layout(path, name))["sparse_key"],
        "bm25": False,
    }
    args.update(change)
    store = SnapshotStore.for_collection(str(path), str(collection.id), **args)
    assert store is not None
    return store


def sparse_rows(result: dict[str, Any]) -> list[Any]:
    """The sparse-mode rows of a `read` (it alternates sparse and hybrid per query).

    After another process wrote, only these are compared between processes: the hybrid
    rows also hold chromadb's dense leg, which in 1.5.9 can lag another process's writes
    for a while (see the README's Limitations), and that is not what a snapshot decides.
    """
    rows: list[Any] = result["results"][0::2]
    return rows


def cold(path: Path, url: str, name: str = "docs") -> dict[str, Any]:
    """Results from Chroma alone: the snapshot moved away for the run, then put back."""
    snap = snapshot_of(path, name)
    aside = snap.with_name("aside")
    snap.rename(aside)
    try:
        result = read(path, url, name)
    finally:
        aside.replace(snap)
    assert result["opened_from"] == "chroma"
    return result


def test_a_new_process_opens_from_the_snapshot_with_the_results_of_a_cold_open(
    tmp_path: Path, sparse_ef: ChromaSparseEmbeddingFunction, embed_server_url: str
) -> None:
    """close() saves a snapshot; another process (another hash seed) uses it, same results."""
    make(tmp_path, "docs", sparse_ef)
    assert snapshot_of(tmp_path).is_file()

    warm = read(tmp_path, embed_server_url)

    assert warm["opened_from"] == "snapshot"
    assert warm["results"] == cold(tmp_path, embed_server_url)["results"]
    assert any(ids for ids, _ in warm["results"])


def test_a_reopen_catches_up_on_what_another_process_wrote_since_the_snapshot(
    tmp_path: Path, sparse_ef: ChromaSparseEmbeddingFunction, embed_server_url: str
) -> None:
    """Upserts, deletes and a raw add by another process after the snapshot are all seen."""
    make(tmp_path, "docs", sparse_ef)
    subprocess.run(
        [sys.executable, "-c", WRITER, str(tmp_path), embed_server_url, "docs"],
        cwd=ROOT,
        check=True,
    )

    warm = read(tmp_path, embed_server_url)

    assert warm["opened_from"] == "snapshot"
    assert sparse_rows(warm) == sparse_rows(cold(tmp_path, embed_server_url))
    found = {rid for ids, _ in sparse_rows(warm) for rid in ids}
    assert {"new1", "new2", "raw1"} <= found
    assert not {"d4", "d5"} & found


def test_a_reopen_catches_up_from_record_sequence_numbers_when_the_log_was_purged(
    tmp_path: Path, sparse_ef: ChromaSparseEmbeddingFunction, embed_server_url: str
) -> None:
    """Chroma purged its log past the snapshot's watermark: changes still apply."""
    make(tmp_path, "docs", sparse_ef)
    saved = store_of(tmp_path).load()
    assert saved is not None
    docs = HybridCollection.open(
        chromadb.PersistentClient(str(tmp_path)),
        "docs",
        embedding_function=HashEmbedding(),
        sparse_embedding_function=sparse_ef,
    )
    docs.upsert(ids=[f"n{i}" for i in range(40)], documents=["platypus"] * 40)
    docs.delete(ids=["d1", "d2"])
    with sqlite3.connect(tmp_path / "chroma.sqlite3") as db:
        row = db.execute("SELECT MIN(seq_id) FROM embeddings_queue").fetchone()
    assert row[0] is not None
    assert int(row[0]) > saved.watermark + 1  # the history since the snapshot is gone

    warm = read(tmp_path, embed_server_url)

    assert warm["opened_from"] == "snapshot"
    assert sparse_rows(warm) == sparse_rows(cold(tmp_path, embed_server_url))
    found = {rid for ids, _ in sparse_rows(warm) for rid in ids}
    assert {f"n{i}" for i in range(40)} & found
    assert not {"d1", "d2"} & found


def _flip_a_byte(snap: Path, other: Path) -> None:
    data = bytearray(snap.read_bytes())
    data[len(data) * 2 // 3] ^= 0x40
    snap.write_bytes(bytes(data))


def _truncate(snap: Path, other: Path) -> None:
    data = snap.read_bytes()
    snap.write_bytes(data[: len(data) - 100])


def _empty(snap: Path, other: Path) -> None:
    snap.write_bytes(b"")


def _garbage(snap: Path, other: Path) -> None:
    snap.write_bytes(os.urandom(4096))


def _another_collections(snap: Path, other: Path) -> None:
    shutil.copyfile(other, snap)


@pytest.mark.parametrize(
    "damage", [_flip_a_byte, _truncate, _empty, _garbage, _another_collections]
)
def test_a_damaged_or_foreign_snapshot_is_ignored_and_results_are_those_of_chroma(
    tmp_path: Path,
    sparse_ef: ChromaSparseEmbeddingFunction,
    embed_server_url: str,
    damage: Any,
) -> None:
    """A flipped byte, a cut, an empty or random file, or another collection's: read Chroma."""
    make(tmp_path, "docs", sparse_ef)
    make(tmp_path, "other", sparse_ef, n=90)  # similar records under the same ids
    expected = cold(tmp_path, embed_server_url)["results"]
    snap = snapshot_of(tmp_path)
    damage(snap, snapshot_of(tmp_path, "other"))

    after = read(tmp_path, embed_server_url)

    assert after["opened_from"] == "chroma"
    assert after["results"] == expected
    # The read from Chroma saved a sound snapshot again.
    assert read(tmp_path, embed_server_url)["opened_from"] == "snapshot"


def test_a_snapshot_newer_than_chroma_is_ignored(
    tmp_path: Path, sparse_ef: ChromaSparseEmbeddingFunction, embed_server_url: str
) -> None:
    """A watermark past Chroma's (its folder restored from an older backup) means read Chroma."""
    make(tmp_path, "docs", sparse_ef)
    expected = cold(tmp_path, embed_server_url)["results"]
    store = store_of(tmp_path)
    saved = store.load()
    assert saved is not None
    # The state of a future Chroma: one record fewer, at a watermark not reached yet.
    gone = saved.index.ids()[0]
    saved.index.delete([gone])
    known = {rid: p for rid, p in saved.known.items() if rid != gone}
    store._write(CacheState(saved.index, known, saved.pending, saved.watermark + 5))
    assert store.load() is not None

    after = read(tmp_path, embed_server_url)

    assert after["opened_from"] == "chroma"
    assert after["results"] == expected


def test_a_snapshot_of_another_model_sparse_key_or_bm25_setting_is_not_used(
    tmp_path: Path, sparse_ef: ChromaSparseEmbeddingFunction
) -> None:
    """The layout digest covers the stored function config, the sparse key and BM25."""
    make(tmp_path, "docs", sparse_ef)
    layout = json.loads(stored_layout(tmp_path))
    layout["config"]["model"] = "another-model"

    assert store_of(tmp_path).load() is not None
    assert store_of(tmp_path, sparse_key="other_key").load() is None
    assert store_of(tmp_path, bm25=True).load() is None
    assert store_of(tmp_path, stored_layout=json.dumps(layout)).load() is None


def test_without_a_snapshot_file_writable_search_still_works(
    tmp_path: Path, sparse_ef: ChromaSparseEmbeddingFunction, embed_server_url: str
) -> None:
    """A folder where the snapshot cannot be written costs only the snapshot."""
    make(tmp_path, "docs", sparse_ef)
    snap = snapshot_of(tmp_path)
    expected = cold(tmp_path, embed_server_url)["results"]
    snap.unlink()
    snap.mkdir()  # a directory where the file should go: every write fails
    try:
        after = read(tmp_path, embed_server_url)
    finally:
        snap.rmdir()
    assert after["opened_from"] == "chroma"
    assert after["results"] == expected


def test_the_snapshot_is_saved_in_the_background_after_enough_writes(
    tmp_path: Path, sparse_ef: ChromaSparseEmbeddingFunction
) -> None:
    """Our own writes past the policy's thresholds save a snapshot without close()."""
    make(tmp_path, "docs", sparse_ef)
    docs = HybridCollection.open(
        chromadb.PersistentClient(str(tmp_path)),
        "docs",
        embedding_function=HashEmbedding(),
        sparse_embedding_function=sparse_ef,
    )
    docs.search("record", mode="sparse")
    backend = docs._backend
    assert isinstance(backend, LocalBackend)
    assert backend.cache.opened_from == "snapshot"
    store = backend.cache._store
    assert store is not None
    store._min_changes, store._min_interval = 5, 0.0
    writes = store.writes
    docs.upsert(ids=[f"n{i}" for i in range(6)], documents=["platypus"] * 6)
    store.wait()
    assert store.writes == writes + 1
    saved = store.load()
    assert saved is not None
    assert {f"n{i}" for i in range(6)} <= set(saved.known)
    assert saved.watermark == backend.cache._seen


def test_pending_records_are_saved_and_retried_by_a_process_opening_from_the_snapshot(
    tmp_path: Path, embed_server_factory: Any, embed_server_url: str
) -> None:
    """A record the service refused stays pending across a snapshot, and is retried as a
    full read would retry it: embedded once a server accepts it."""
    strict = str(embed_server_factory(max_text_chars=200).url)
    long_text = "platypus " * 40
    with ChromaSparseEmbeddingFunction(base_url=strict, max_retries=0) as ef:
        make(tmp_path, "docs", ef)
        docs = HybridCollection.open(
            chromadb.PersistentClient(str(tmp_path)),
            "docs",
            embedding_function=HashEmbedding(),
            sparse_embedding_function=ef,
        )
        docs.collection.add(
            ids=["long"], documents=[long_text], embeddings=HashEmbedding()([long_text])
        )
        docs.search("record", mode="sparse")
        assert [p.id for p in docs.pending()] == ["long"]
        docs.close()

    still_refused = read(tmp_path, strict)
    assert still_refused["opened_from"] == "snapshot"
    assert still_refused["pending"] == ["long"]

    accepted = read(tmp_path, embed_server_url)
    assert accepted["opened_from"] == "snapshot"
    assert accepted["pending"] == []
    sparse_platypus = accepted["results"][2 * QUERIES.index("platypus")][0]
    assert "long" in sparse_platypus
    assert accepted["results"] == cold(tmp_path, embed_server_url)["results"]
