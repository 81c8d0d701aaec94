"""HybridCollection on a real PersistentClient: reopen + index build, and search latency.

Builds (once; reused with --path) a collection of N records the way HybridCollection stores
them: each record's metadata holds a SYNTHETIC SPLADE-like sparse vector (``bench/_synthetic``,
~150 nonzeros over 30,522 tokens) encoded with ``_codec`` plus the document hash, and a
cheap deterministic 64-dim dense embedding. No embedding service is called.

Then, each in a fresh Python process (so nothing is cached in memory but the OS's page
cache):

- cold open: no sparse index snapshot. ``PersistentClient(path)`` + ``HybridCollection.open``
  (open), then the first hybrid search, which reads every record's stored vector from
  Chroma and builds the index (its Chroma reads shown apart). The process then saves the
  snapshot in the background (timed after the search);
- warm open: the snapshot the cold process saved. Open, then the first search, which reads
  the snapshot and catches up from its watermark (nothing to catch up here);
- steady state in the warm process, median and p95 over the queries: hybrid (``Rrf`` over
  a dense ``Knn`` and a sparse ``Knn``, 100 candidates each, via a chromadb ``Search`` with
  vector queries, so no embedding call is timed), each leg alone, the index alone, and
  Chroma's own dense ``collection.query`` as the baseline the ratio is taken against.

``--behind N``: another writer updates N records between the cold and the warm open, so
the warm open also catches up on them (cost proportional to N, not to the collection).

Goals (issue 12): first result of a fresh process <= 3 s at 200k, <= 10 s at 1M.

Run::

    python bench/bench_hybrid.py --docs 100000 --path /tmp/hybrid-bench-100k
    python bench/bench_hybrid.py --docs 200000 --path /tmp/hybrid-bench-200k
    python bench/bench_hybrid.py --docs 1000000 --path /tmp/hybrid-bench-1m

Building takes ~1 s per 1,000 records on 2 cores (printed); ``--path`` reuses a built one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _synthetic import SyntheticCorpus

NAME = "bench"
DIMS = 64
WRITE_BATCH = 5_000


class BenchDense:
    """A cheap deterministic dense function: never called for vector queries."""

    def __init__(self) -> None:
        pass

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        return [_dense_vector(hash(t) % 2**31) for t in input]


def _dense_vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIMS).astype(np.float32)
    return v / np.linalg.norm(v)


def _dense_matrix(n: int, seed: int) -> np.ndarray:
    m = np.random.default_rng(seed).standard_normal((n, DIMS)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def build(path: str, n_docs: int) -> float:
    """Write the collection; returns seconds taken."""
    import chromadb
    from chromadb.api.types import EmbeddingFunction

    from chroma_sparse_ef import ChromaSparseEmbeddingFunction
    from chroma_sparse_ef.hybrid import HybridCollection
    from chroma_sparse_ef.hybrid._codec import encode_sparse_vector
    from chroma_sparse_ef.hybrid._stored import doc_hash_key, document_hash

    class Dense(BenchDense, EmbeddingFunction):  # type: ignore[type-arg,misc]
        pass

    t0 = time.perf_counter()
    client = chromadb.PersistentClient(path)
    hc = HybridCollection.get_or_create(
        client,
        NAME,
        sparse_embedding_function=ChromaSparseEmbeddingFunction(base_url="http://127.0.0.1:9"),
        embedding_function=Dense(),
    )
    indptr, indices, values = SyntheticCorpus().documents(n_docs)
    dense = _dense_matrix(n_docs, seed=7)
    key, hkey = hc.sparse_key, doc_hash_key(hc.sparse_key)
    for start in range(0, n_docs, WRITE_BATCH):
        end = min(n_docs, start + WRITE_BATCH)
        ids = [f"doc-{i}" for i in range(start, end)]
        docs = [f"synthetic document {i}" for i in range(start, end)]
        metas = [
            {
                "group": i % 10,
                key: encode_sparse_vector(
                    indices[indptr[i] : indptr[i + 1]], values[indptr[i] : indptr[i + 1]]
                ),
                hkey: document_hash(docs[i - start]),
            }
            for i in range(start, end)
        ]
        hc.collection.add(ids=ids, documents=docs, metadatas=metas, embeddings=dense[start:end])
        print(f"  wrote {end:,}/{n_docs:,} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return time.perf_counter() - t0


def measure(path: str, n_queries: int, phase: str) -> dict[str, Any]:
    """Open in this (fresh) process and time everything; returns the figures.

    ``phase`` "cold": the snapshot is absent, the first search reads every record from
    Chroma (and saves a snapshot in the background, timed after). "warm": the snapshot
    is there; the first search reads it and catches up; then steady-state latencies.
    """
    import chromadb
    from chromadb.api.types import EmbeddingFunction, SparseVector
    from chromadb.execution.expression import K, Knn, Rrf, Search

    import chroma_sparse_ef  # noqa: F401  (registers the sparse function)
    from chroma_sparse_ef.hybrid import HybridCollection, _coherence

    class Dense(BenchDense, EmbeddingFunction):  # type: ignore[type-arg,misc]
        pass

    queries = SyntheticCorpus().queries(n_queries)
    dense_queries = _dense_matrix(n_queries, seed=11)

    t0 = time.perf_counter()
    client = chromadb.PersistentClient(path)
    hc = HybridCollection.open(client, NAME, embedding_function=Dense())
    t_open = time.perf_counter() - t0
    collection = hc.collection
    backend: Any = hc._backend
    cache = backend.cache
    store = cache._store

    # Split a full read into Chroma reads and our decode + index build.
    read_seconds = [0.0]
    original_get = collection.get

    def timed_get(*args: Any, **kwargs: Any) -> Any:
        s = time.perf_counter()
        try:
            return original_get(*args, **kwargs)
        finally:
            read_seconds[0] += time.perf_counter() - s

    def hybrid(i: int) -> Search:
        q_idx, q_val = queries[i]
        sparse = SparseVector(indices=q_idx.tolist(), values=q_val.tolist())
        return (
            Search()
            .rank(
                Rrf(
                    [
                        Knn(
                            query=dense_queries[i].tolist(),
                            return_rank=True,
                            limit=100,
                            default=100.0,
                        ),
                        Knn(
                            query=sparse,
                            key=hc.sparse_key,
                            return_rank=True,
                            limit=100,
                            default=100.0,
                        ),
                    ]
                )
            )
            .limit(10)
            .select(K.DOCUMENT, K.METADATA, K.SCORE)
        )

    collection.get = timed_get
    t1 = time.perf_counter()
    cache.ensure_fresh()  # what the first search does first: the sparse cache
    t_cache = time.perf_counter() - t1
    hc.search(hybrid(0))
    t_first = time.perf_counter() - t1
    collection.get = original_get
    index = backend.index
    figures: dict[str, Any] = {
        "phase": phase,
        "records": len(index),
        "opened_from": cache.opened_from,
        "open_s": t_open,
        "first_search_s": t_first,
        "cache_s": t_cache,
        "first_read_s": read_seconds[0],
        "index_mb": index.nbytes / 1e6,
        "page": _coherence.LOAD_PAGE,
        "snapshot_mb": None,
        "snapshot_write_s": None,
    }
    if store is not None:
        store.wait()  # the background save after a full read: off the first search's path
        figures["snapshot_write_s"] = store.last_write_seconds
        if store.path.exists():
            figures["snapshot_mb"] = store.path.stat().st_size / 1e6
    if phase == "cold":
        return figures

    def sparse_only(i: int) -> Search:
        q_idx, q_val = queries[i]
        sparse = SparseVector(indices=q_idx.tolist(), values=q_val.tolist())
        return (
            Search()
            .rank(Knn(query=sparse, key=hc.sparse_key, limit=100))
            .limit(10)
            .select(K.DOCUMENT)
        )

    def dense_only(i: int) -> Search:
        return (
            Search()
            .rank(Knn(query=dense_queries[i].tolist(), limit=100))
            .limit(10)
            .select(K.DOCUMENT)
        )

    def timed(run: Any) -> list[float]:
        run(0)  # warm-up
        out = []
        for i in range(n_queries):
            s = time.perf_counter()
            run(i)
            out.append((time.perf_counter() - s) * 1000)
        return out

    figures.update(
        {
            "hybrid_ms": timed(lambda i: hc.search(hybrid(i))),
            "sparse_ms": timed(lambda i: hc.search(sparse_only(i))),
            "dense_ms": timed(lambda i: hc.search(dense_only(i))),
            "index_only_ms": timed(lambda i: index.search(queries[i][0], queries[i][1], 100)),
            "chroma_query_ms": timed(
                lambda i: collection.query(
                    query_embeddings=[dense_queries[i].tolist()],
                    n_results=100,
                    include=["metadatas", "documents", "distances"],
                )
            ),
        }
    )
    return figures


def write_behind(path: str, n: int) -> None:
    """Update ``n`` records' user metadata through the raw collection (another writer)."""
    import chromadb

    collection = chromadb.PersistentClient(path).get_collection(NAME)
    for start in range(0, n, WRITE_BATCH):
        ids = [f"doc-{i}" for i in range(start, min(n, start + WRITE_BATCH))]
        collection.update(ids=ids, metadatas=[{"group": -1} for _ in ids])


def report(
    cold: dict[str, Any],
    warm: dict[str, Any],
    setup_s: float | None,
    n_docs: int,
    behind: int = 0,
) -> None:
    def stat(name: str) -> tuple[float, float]:
        values = warm[name]
        return statistics.median(values), float(np.percentile(values, 95))

    print()
    if setup_s is not None:
        print(f"setup: wrote {n_docs:,} records in {setup_s:.1f} s")
    print(
        f"records: {warm['records']:,}, index {warm['index_mb']:.0f} MB (numpy arrays), "
        f"snapshot file {warm['snapshot_mb'] or 0:.0f} MB"
    )
    for fig, label in [(cold, "cold (no snapshot)"), (warm, "warm (snapshot)   ")]:
        total = fig["open_s"] + fig["first_search_s"]
        print(
            f"{label}: open {fig['open_s']:.2f} s + first search {fig['first_search_s']:.2f} s"
            f" = {total:.2f} s to first result  (sparse cache from {fig['opened_from']} in "
            f"{fig['cache_s']:.2f} s, of it Chroma reads {fig['first_read_s']:.2f} s)"
        )
    if cold["snapshot_write_s"] is not None:
        print(
            f"snapshot saved by the cold process in the background: {cold['snapshot_write_s']:.2f} s"
        )
    cold_total = cold["open_s"] + cold["first_search_s"]
    warm_total = warm["open_s"] + warm["first_search_s"]
    print(f"warm / cold time to first result: x{warm_total / cold_total:.2f}")
    if behind:
        print(f"(the warm open caught up on {behind:,} records updated since the snapshot)")
    base = stat("chroma_query_ms")[0]
    print("steady state (warm process):")
    for label, key in [
        ("hybrid search (Rrf, 2 x 100 candidates)", "hybrid_ms"),
        ("sparse leg via HybridCollection", "sparse_ms"),
        ("dense leg via HybridCollection", "dense_ms"),
        ("SparseIndex.search alone (top 100)", "index_only_ms"),
        ("chromadb collection.query (dense, 100)", "chroma_query_ms"),
    ]:
        median, p95 = stat(key)
        print(
            f"  {label:42s} median {median:7.2f} ms  p95 {p95:7.2f} ms  x{median / base:5.2f} vs query"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=100_000, help="records (default 100,000)")
    parser.add_argument(
        "--path", default="/tmp/chroma-sparse-ef-bench-hybrid", help="PersistentClient dir"
    )
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument(
        "--rebuild", action="store_true", help="write the collection even if it exists"
    )
    parser.add_argument(
        "--behind",
        type=int,
        default=0,
        help="records another writer updates between the cold and the warm open (catch-up)",
    )
    parser.add_argument("--measure-only", choices=["cold", "warm"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure_only:
        print(json.dumps(measure(args.path, args.queries, args.measure_only)))
        return

    marker = Path(args.path) / f".bench-{args.docs}"
    setup_s = None
    if args.rebuild or not marker.exists():
        import shutil

        shutil.rmtree(args.path, ignore_errors=True)
        print(f"building {args.docs:,} records in {args.path} ...", flush=True)
        setup_s = build(args.path, args.docs)
        marker.touch()
    # Cold: no snapshot (the cold process saves one); warm: that snapshot.
    for old in (Path(args.path) / "chroma_sparse_ef").glob("*.sparse-index"):
        old.unlink()
    figures = {}
    for phase in ("cold", "warm"):
        if phase == "warm" and args.behind:
            write_behind(args.path, args.behind)
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--measure-only",
                phase,
                "--path",
                args.path,
                "--queries",
                str(args.queries),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        figures[phase] = json.loads(out.stdout.strip().splitlines()[-1])
    report(figures["cold"], figures["warm"], setup_s, args.docs, args.behind)


if __name__ == "__main__":
    main()
