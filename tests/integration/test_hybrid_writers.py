"""Another process writing the same PersistentClient path while this one searches."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import chromadb
import pytest

from chroma_sparse_ef import ChromaSparseEmbeddingFunction
from chroma_sparse_ef.hybrid import HybridCollection
from chroma_sparse_ef.hybrid._local import LocalBackend
from tests.integration.chroma_doubles import HashEmbedding

pytestmark = pytest.mark.filterwarnings(
    "ignore:The EmbeddingFunction class does not implement name:DeprecationWarning"
)

ROOT = Path(__file__).resolve().parents[2]

#: The writer upserts one record at a time, deletes every fifth one's predecessor, and
#: adds raw records (no sparse vector) through the chromadb collection now and then.
WRITER = textwrap.dedent(
    """
    import sys, time
    import chromadb
    from chroma_sparse_ef import ChromaSparseEmbeddingFunction
    from chroma_sparse_ef.hybrid import HybridCollection
    from tests.integration.chroma_doubles import HashEmbedding

    path, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dense = HashEmbedding()
    docs = HybridCollection.open(
        chromadb.PersistentClient(path), "docs", embedding_function=dense,
        sparse_embedding_function=ChromaSparseEmbeddingFunction(base_url=url),
    )
    print("ready", flush=True)
    for i in range(n):
        docs.upsert(ids=[f"w{i}"], documents=[f"wallaby {i} hops"])
        if i % 5 == 4:
            docs.delete(ids=[f"w{i - 1}"])
        if i % 7 == 6:
            docs.collection.add(ids=[f"raw{i}"], documents=[f"wombat {i}"],
                                embeddings=dense([f"wombat {i}"]))
        time.sleep(0.02)  # ~40 writes/s: fast enough to overlap many searches
    print("done", flush=True)
    """
)


def test_searches_stay_correct_while_another_process_writes_and_never_reload(
    tmp_path: Path, embed_server_url: str
) -> None:
    """A concurrent writer process's records are caught up from the log, not rebuilt."""
    path = str(tmp_path / "db")
    dense = HashEmbedding()
    with ChromaSparseEmbeddingFunction(base_url=embed_server_url) as ef:
        docs = HybridCollection.get_or_create(
            chromadb.PersistentClient(path),
            "docs",
            sparse_embedding_function=ef,
            embedding_function=dense,
        )
        docs.add(ids=[f"d{i}" for i in range(200)], documents=[f"kangaroo {i}" for i in range(200)])
        docs.search("kangaroo", mode="sparse")
        backend = docs._backend
        assert isinstance(backend, LocalBackend)
        loads = _count_loads(backend)
        n = 60
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, path, embed_server_url, str(n)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        searches = 0
        while writer.poll() is None:
            for mode in ("hybrid", "sparse", "dense"):
                docs.search("wallaby hops", mode=mode, limit=5)  # type: ignore[arg-type]
                searches += 1
        assert writer.returncode == 0
        assert searches > 10

        deleted = {f"w{i - 1}" for i in range(n) if i % 5 == 4}
        expected = {f"w{i}" for i in range(n)} - deleted
        found = set(docs.search("wallaby", mode="sparse", limit=200).ids)
        assert found == expected
        raw = set(docs.search("wombat", mode="sparse", limit=200).ids)
        assert raw == {f"raw{i}" for i in range(n) if i % 7 == 6}
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
