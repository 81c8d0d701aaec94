"""Benchmark: open the sparse index from a snapshot vs rebuild it from decoded vectors.

Run: ``python bench/bench_snapshot.py [--docs 100000 200000 [1000000]] [--dir PATH]``

Data is SYNTHETIC (see `_synthetic.py`). For each size, from one run:

- rebuild: decode the codec strings Chroma stores (`decode_sparse_vectors`) and build the
  index (`SparseIndex.from_csr`), i.e. what an open costs after Chroma's reads; and the
  same page by page (10,000 records a page, `SparseIndex.from_csr_pages`);
- write: `write_snapshot` (hash + write + fsync + rename);
- open: `load_snapshot` in a fresh process (read + verify every digest + build the id
  map), then its first search;
- memory: the index's own bytes, and the peak resident-set growth of each phase (the
  paged rebuild and the open run in fresh processes, so freed memory cannot hide a peak;
  their resident growth includes the id list and map, ~100-150 bytes per record).

Reading Chroma itself (``collection.get``) is measured by ``bench/bench_hybrid.py``; the
snapshot removes it from an open except for the writes since the snapshot.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synthetic import SyntheticCorpus

from chroma_sparse_ef.hybrid._codec import decode_sparse_vectors, encode_sparse_vector
from chroma_sparse_ef.hybrid._index import SparseIndex
from chroma_sparse_ef.hybrid._snapshot import layout_digest, write_snapshot

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


#: Records per page of the paged rebuild (what a caller reading Chroma in pages gets).
PAGE = 10_000

_OPEN_IN_CHILD = """
import sys, time, numpy as np
from chroma_sparse_ef.hybrid._snapshot import load_snapshot
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
base = rss()
t0 = time.perf_counter()
got = load_snapshot(sys.argv[1], collection_id=sys.argv[2], layout=sys.argv[3])
t_load = time.perf_counter() - t0
q = np.array(sys.argv[4].split(","), dtype=np.uint32)
w = np.array(sys.argv[5].split(","), dtype=np.float32)
t0 = time.perf_counter()
res = got.index.search(q, w, 10)
t_first = time.perf_counter() - t0
print(t_load, t_first, hwm() - base, rss() - base, repr(res[0]))
"""


_PAGED_IN_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[2])
from _synthetic import SyntheticCorpus
from chroma_sparse_ef.hybrid._codec import decode_sparse_vectors, encode_sparse_vector
from chroma_sparse_ef.hybrid._index import SparseIndex
n, page = int(sys.argv[1]), int(sys.argv[3])
indptr, indices, values = SyntheticCorpus().documents(n)
ids = [f"doc-{i:07d}" for i in range(n)]
encoded = [
    encode_sparse_vector(indices[indptr[i] : indptr[i + 1]], values[indptr[i] : indptr[i + 1]])
    for i in range(n)
]
del indptr, indices, values
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = rss()
def pages():
    for a in range(0, n, page):
        yield (ids[a : a + page], *decode_sparse_vectors(encoded[a : a + page]))
t0 = time.perf_counter()
index = SparseIndex.from_csr_pages(pages())
print(time.perf_counter() - t0, hwm() - base, rss() - base, index.nbytes, index.segment_count)
"""


def paged_in_child(n: int) -> tuple[float, ...]:
    """Rebuild page by page in a fresh interpreter, so its peak is not hidden by memory
    this process freed earlier (and would reuse)."""
    bench = str(Path(__file__).resolve().parent)
    out = subprocess.run(
        [sys.executable, "-c", _PAGED_IN_CHILD, str(n), bench, str(PAGE)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return tuple(float(x) for x in out)


def open_in_child(
    path: Path, query: tuple[np.ndarray, np.ndarray]
) -> tuple[float, float, float, float, str]:
    """Load the snapshot and search once in a fresh interpreter, as a new process would."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _OPEN_IN_CHILD,
            str(path),
            COLLECTION_ID,
            LAYOUT,
            ",".join(map(str, query[0].tolist())),
            ",".join(map(repr, query[1].tolist())),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split(maxsplit=4)
    return float(out[0]), float(out[1]), float(out[2]), float(out[3]), out[4].strip()


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

    t_paged, paged_peak, paged_rss, _, paged_segments = paged_in_child(n)
    t_load, t_first, load_peak, load_rss, best = open_in_child(path, query)
    assert best == repr(expected[0]), (best, expected[0])
    size = path.stat().st_size
    rebuild = t_decode + t_build
    print(
        f"{n:>9,} | rebuild {rebuild:6.2f} s (decode {t_decode:.2f} + build {t_build:.2f}), "
        f"paged {t_paged:6.2f} s | write {t_write:5.2f} s | open {t_load:5.2f} s + first "
        f"search {t_first * 1e3:.1f} ms (rebuilt: {t_first_rebuilt * 1e3:.1f} ms) | "
        f"{rebuild / t_load:4.1f}x faster"
    )
    print(
        f"{'':>9} | file {mib(size)}, index {mib(nbytes)}; peak growth: rebuild "
        f"{mib(rebuild_peak)} ({rebuild_peak / nbytes:.2f}x the index), paged "
        f"{mib(paged_peak)} ({paged_peak / nbytes:.2f}x; {paged_segments:.0f} segments, "
        f"resident after {mib(paged_rss)}), open {mib(load_peak)} "
        f"({load_peak / nbytes:.2f}x; resident after {mib(load_rss)}, ids included)"
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
