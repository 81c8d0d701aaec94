"""Benchmark: open the sparse index from a snapshot vs rebuild it from decoded vectors.

Run: ``python bench/bench_snapshot.py [--docs 100000 200000 [1000000]] [--dir PATH]``

Data is SYNTHETIC (see `_synthetic.py`). For each size, from one run:

- rebuild: decode the codec strings Chroma stores (`decode_sparse_vectors`) and build the
  index (`SparseIndex.from_csr`), i.e. what an open costs after Chroma's reads;
- write: `write_snapshot` (hash + write + fsync + rename);
- open: `load_snapshot` (read + verify every digest + build the id map), then the first
  search;
- memory: peak resident set during rebuild and during open, against the steady state.

Reading Chroma itself (``collection.get``) is measured by ``bench/bench_hybrid.py``; the
snapshot removes it from an open except for the writes since the snapshot.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic import SyntheticCorpus

from chroma_sparse_ef.hybrid._codec import decode_sparse_vectors, encode_sparse_vector
from chroma_sparse_ef.hybrid._index import SparseIndex
from chroma_sparse_ef.hybrid._snapshot import layout_digest, load_snapshot, write_snapshot

COLLECTION_ID = "00000000-0000-4000-8000-000000000001"
LAYOUT = layout_digest({"bench": True})


def rss() -> int:
    """Resident set size now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak() -> None:
    """Reset the kernel's peak-RSS counter (Linux 4.0+), so VmHWM measures one phase."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def one_size(n: int, folder: Path, corpus: SyntheticCorpus) -> None:
    indptr, indices, values = corpus.documents(n)
    ids = [f"doc-{i:07d}" for i in range(n)]
    encoded = [
        encode_sparse_vector(indices[indptr[i] : indptr[i + 1]], values[indptr[i] : indptr[i + 1]])
        for i in range(n)
    ]
    query = corpus.queries(1)[0]
    del indptr, indices, values
    gc.collect()

    base = rss()
    reset_peak()
    t0 = time.perf_counter()
    decoded = decode_sparse_vectors(encoded)
    t_decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = SparseIndex.from_csr(ids, *decoded)
    t_build = time.perf_counter() - t0
    del decoded
    gc.collect()
    rebuild_peak = peak() - base
    steady = rss() - base
    t0 = time.perf_counter()
    expected = index.search(query[0], query[1], 10)
    t_first_rebuilt = time.perf_counter() - t0

    path = folder / f"{n}.sparse-index"
    t0 = time.perf_counter()
    write_snapshot(path, index, collection_id=COLLECTION_ID, watermark=n, layout=LAYOUT)
    t_write = time.perf_counter() - t0
    nbytes = index.nbytes
    del index
    gc.collect()

    base = rss()
    reset_peak()
    t0 = time.perf_counter()
    loaded = load_snapshot(path, collection_id=COLLECTION_ID, layout=LAYOUT, watermark=n)
    t_load = time.perf_counter() - t0
    assert loaded is not None
    load_peak = peak() - base
    t0 = time.perf_counter()
    got = loaded.index.search(query[0], query[1], 10)
    t_first = time.perf_counter() - t0
    assert got == expected
    size = path.stat().st_size
    rebuild = t_decode + t_build
    print(
        f"{n:>9,} | rebuild {rebuild:6.2f} s (decode {t_decode:.2f} + build {t_build:.2f}) "
        f"| write {t_write:5.2f} s | open {t_load:5.2f} s + first search "
        f"{t_first * 1e3:.1f} ms (rebuilt: {t_first_rebuilt * 1e3:.1f} ms) "
        f"| {rebuild / t_load:4.1f}x faster"
    )
    print(
        f"{'':>9} | file {mib(size)}, index {mib(nbytes)}; steady {mib(steady)}, peak "
        f"during rebuild {mib(rebuild_peak)} ({rebuild_peak / max(steady, 1):.2f}x, "
        f"decoded vectors included), during open {mib(load_peak)} "
        f"({load_peak / max(steady, 1):.2f}x)"
    )
    path.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 200_000])
    parser.add_argument("--dir", type=Path, default=None, help="where to write snapshots")
    args = parser.parse_args(argv)
    print(__doc__.splitlines()[0])
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cpus; "
        "data: SYNTHETIC (bench/_synthetic.py); the page cache is warm (just written)"
    )
    corpus = SyntheticCorpus()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in args.docs:
            one_size(n, Path(tmp), corpus)


if __name__ == "__main__":
    main()
