"""Search latency on a PersistentClient collection while another process writes to it.

Issue 8.8 (d). A collection of N records in HybridCollection's layout (built once by
`bench_hybrid.build`: synthetic SPLADE-like stored vectors, no embedding service) is
opened in this process and searched in a loop with hybrid ``Search`` objects whose
queries are vectors (so no embedding call is timed):

1. quiet: for ``--seconds``, nothing else writes;
2. writer: for ``--seconds``, a separate process upserts ``--rate`` records per second
   (default 4) through the raw chromadb collection, each with a stored sparse vector and
   document hash as HybridCollection writes them: half new ids, half existing ids with a
   new document.

It prints the mean and p95 search latency of each phase, their ratio (target: within
2x), how many full reloads of the sparse cache happened (should be 0: the cache catches
up from Chroma's log) and that every record the writer wrote is found by the sparse leg
afterwards.

Run::

    python bench/bench_writers.py --docs 20000 --path /tmp/writers-20k
    python bench/bench_writers.py --docs 200000 --path /tmp/writers-200k

The collection is built on the first run and reused with the same ``--path``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _synthetic import SyntheticCorpus  # noqa: E402
from bench_hybrid import NAME, BenchDense, _dense_matrix, build  # noqa: E402

WRITER = r"""
import sys, time
import numpy as np
import chromadb
from chroma_sparse_ef.hybrid._codec import encode_sparse_vector
from chroma_sparse_ef.hybrid._stored import doc_hash_key, document_hash

path, name, n, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
collection = chromadb.PersistentClient(path).get_collection(name)
key = "sparse_embedding"
rng = np.random.default_rng(5)
print("ready", flush=True)
i = 0
next_at = time.monotonic()
while True:
    rid = f"writer-{i}" if i % 2 == 0 else f"doc-{int(rng.integers(0, n))}"
    doc = f"written by the writer {i}"
    terms = np.unique(rng.integers(0, 30522, 150))
    vector = encode_sparse_vector(terms, rng.lognormal(size=terms.size))
    dense = rng.standard_normal(64).astype(np.float32)
    collection.upsert(
        ids=[rid], documents=[doc], embeddings=[dense / np.linalg.norm(dense)],
        metadatas=[{key: vector, doc_hash_key(key): document_hash(doc), "group": 0}],
    )
    print(rid, flush=True)
    i += 1
    next_at += 1.0 / rate
    time.sleep(max(0.0, next_at - time.monotonic()))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--path", default=None, help="collection directory (built if missing)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--rate", type=float, default=4.0, help="writer records per second")
    args = parser.parse_args()
    path = args.path or f"/tmp/bench-writers-{args.docs}"
    load = os.getloadavg()[0]
    print(f"machine load (1-min average) at start: {load:.1f} on {os.cpu_count()} CPUs")
    if not Path(path, "chroma.sqlite3").exists():
        print(f"building {args.docs:,} records in {path} ...")
        print(f"built in {build(path, args.docs):.0f} s")

    import chromadb
    from chromadb.api.types import EmbeddingFunction, SparseVector
    from chromadb.execution.expression import K, Knn, Rrf, Search

    import chroma_sparse_ef  # noqa: F401  (registers the sparse function)
    from chroma_sparse_ef.hybrid import HybridCollection
    from chroma_sparse_ef.hybrid._local import LocalBackend

    class Dense(BenchDense, EmbeddingFunction):  # type: ignore[type-arg,misc]
        pass

    hc = HybridCollection.open(chromadb.PersistentClient(path), NAME, embedding_function=Dense())
    backend = hc._backend
    assert isinstance(backend, LocalBackend)
    t0 = time.perf_counter()
    hc.refresh()
    print(f"opened {hc.count():,} records; sparse cache built in {time.perf_counter() - t0:.1f} s")
    cache = backend.cache
    loads = {"n": 0}
    real_read = cache._read_collection

    def counting_read() -> Any:
        loads["n"] += 1
        return real_read()

    cache._read_collection = counting_read  # type: ignore[method-assign]

    queries = SyntheticCorpus().queries(200)
    dense_queries = _dense_matrix(200, seed=11)

    def search(i: int) -> None:
        q_idx, q_val = queries[i % 200]
        sparse = SparseVector(indices=q_idx.tolist(), values=q_val.tolist())
        hc.search(
            Search()
            .rank(
                Rrf(
                    [
                        Knn(query=dense_queries[i % 200].tolist(), return_rank=True, limit=100),
                        Knn(query=sparse, key=hc.sparse_key, return_rank=True, limit=100),
                    ]
                )
            )
            .limit(10)
            .select(K.DOCUMENT, K.SCORE)
        )

    def phase(seconds: float) -> list[float]:
        out: list[float] = []
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            s = time.perf_counter()
            search(i)
            out.append((time.perf_counter() - s) * 1000)
            i += 1
        return out

    search(0)  # warm-up
    quiet = phase(args.seconds)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, path, NAME, str(args.docs), str(args.rate)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    busy = phase(args.seconds)
    writer.terminate()
    written = [line.strip() for line in writer.stdout.read().splitlines() if line.strip()]
    writer.wait()

    # Every record the writer wrote is in the sparse cache with its latest vector.
    cache.ensure_fresh()
    index = cache.index
    assert index is not None
    missing = [rid for rid in set(written) if rid not in index]

    def stat(values: list[float]) -> str:
        p95 = float(np.percentile(values, 95))
        return f"mean {statistics.fmean(values):7.2f} ms, p95 {p95:7.2f} ms over {len(values)}"

    print(f"records: {args.docs:,}; writer: {args.rate:g} records/s, {len(written)} written")
    print(f"  quiet          {stat(quiet)}")
    print(f"  with a writer  {stat(busy)}")
    print(
        f"  ratio (mean)   {statistics.fmean(busy) / statistics.fmean(quiet):.2f}x (target <= 2x)"
    )
    print(f"  full reloads during the writer phase: {loads['n']}")
    print(f"  writer's records missing from the sparse cache afterwards: {len(missing)}")
    print(f"machine load (1-min average) at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
