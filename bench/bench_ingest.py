"""HybridCollection bulk ingest on a real PersistentClient: crashes and memory.

Two measurements, each in fresh child processes writing through `HybridCollection` to a
real ``PersistentClient``, with the sparse leg from the local server (BM25, in this
process, in a thread) and a cheap deterministic 64-dim dense function:

- ``kill`` (issue 8.8 a): an ``upsert`` of N documents (default 20,000) in one call, killed
  with SIGKILL at a uniformly random point of its expected duration, then run again to
  completion. The server counts every text it embedded; the figure is texts embedded /
  N per kill + rerun (goal: at most 1.15). One uninterrupted run first gives the duration
  and the no-crash baseline (1.00).
- ``rss`` (issue 8.8 c): peak resident memory (``ru_maxrss``) of a child ingesting N
  documents (default 100,000) in one ``upsert`` call against the same in 10 calls. The
  documents are built in the child either way, so both hold the same input.

``--code DIR`` runs the children against another checkout (e.g. the code before streaming
writes) for a side-by-side figure.

Run::

    python bench/bench_ingest.py kill --docs 20000 --kills 5
    python bench/bench_ingest.py rss --docs 100000
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The child: open the collection, say "go", upsert, report peak RSS.
CHILD = r"""
import resource, sys, time
import numpy as np
import chromadb
from chromadb.api.types import EmbeddingFunction
from chroma_sparse_ef import ChromaSparseEmbeddingFunction
from chroma_sparse_ef.hybrid import HybridCollection

path, url, n, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

class Dense(EmbeddingFunction):
    def __init__(self):
        pass
    def __call__(self, input):
        out = []
        for text in input:
            v = np.random.default_rng(abs(hash(text)) % 2**31).standard_normal(64)
            out.append((v / np.linalg.norm(v)).astype(np.float32))
        return out

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi "
         "omicron pi rho sigma tau upsilon phi chi psi omega").split()
def text(i):
    rng = np.random.default_rng(i)
    return f"document {i} " + " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), 40))

docs = HybridCollection.get_or_create(
    chromadb.PersistentClient(path), "ingest",
    sparse_embedding_function=ChromaSparseEmbeddingFunction(base_url=url),
    embedding_function=Dense(),
)
ids = [f"doc-{i}" for i in range(n)]
texts = [text(i) for i in range(n)]
print("go", flush=True)
t0 = time.perf_counter()
step = -(-n // calls)
for start in range(0, n, step):
    docs.upsert(ids=ids[start:start + step], documents=texts[start:start + step])
print(f"done {time.perf_counter() - t0:.2f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}",
      flush=True)
"""


class CountingBackend:
    """The server's BM25 backend, counting the texts it embeds (thread-safe)."""

    def __init__(self) -> None:
        from chroma_sparse_ef.server._backends import Bm25Backend

        self._inner = Bm25Backend()
        self._lock = threading.Lock()
        self.texts = 0

    @property
    def name(self) -> str:
        return str(self._inner.name)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._inner.models)

    @property
    def description(self) -> str:
        return str(self._inner.description)

    def embed(self, texts: Sequence[str], **kwargs: Any) -> Any:
        out = self._inner.embed(texts, **kwargs)
        with self._lock:
            self.texts += len(texts)
        return out


def run_child(
    path: str, url: str, n: int, calls: int, code: Path, kill_after: float | None
) -> tuple[bool, float, int]:
    """Run one ingest; SIGKILL it ``kill_after`` s after it starts writing, if given.

    Returns:
        (completed, seconds, peak RSS in KiB) — seconds and RSS only when completed.
    """
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, path, url, str(n), str(calls)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=code,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "go":
        proc.wait()
        raise RuntimeError(f"the ingest child failed to start (exit {proc.returncode})")
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return False, 0.0, 0
    out = proc.stdout.read().strip().split()
    proc.wait()
    if proc.returncode != 0 or not out or out[0] != "done":
        raise RuntimeError(f"the ingest child failed (exit {proc.returncode})")
    return True, float(out[1]), int(out[2])


def bench_kill(args: argparse.Namespace) -> None:
    from chroma_sparse_ef.testing import run_local_server

    backend = CountingBackend()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        with run_local_server(backends=[backend]) as server:
            _, full_s, _ = run_child(
                str(workdir / "full"), server.url, args.docs, 1, args.code, None
            )
            print(
                f"uninterrupted upsert of {args.docs:,} documents: {full_s:.1f} s, "
                f"{backend.texts / args.docs:.2f}x texts embedded"
            )
            ratios = []
            for trial in range(args.kills):
                path = str(workdir / f"kill{trial}")
                before = backend.texts
                at = rng.uniform(0.02, 0.98) * full_s
                completed, _, _ = run_child(path, server.url, args.docs, 1, args.code, at)
                mid = backend.texts - before
                run_child(path, server.url, args.docs, 1, args.code, None)
                ratio = (backend.texts - before) / args.docs
                ratios.append(ratio)
                state = "finished before the kill" if completed else f"killed at {at:.1f} s"
                print(
                    f"  trial {trial + 1}: {state} after {mid:,} texts embedded; "
                    f"with the rerun {backend.texts - before:,} = {ratio:.3f}x"
                )
            print(
                f"texts embedded / {args.docs:,} over {args.kills} kill+rerun trials: "
                f"mean {sum(ratios) / len(ratios):.3f}x, worst {max(ratios):.3f}x (goal <= 1.15)"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def bench_rss(args: argparse.Namespace) -> None:
    from chroma_sparse_ef.testing import run_local_server

    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        with run_local_server(backends=[CountingBackend()]) as server:
            figures = {}
            for calls in (1, 10):
                _, seconds, rss_kib = run_child(
                    str(workdir / f"calls{calls}"), server.url, args.docs, calls, args.code, None
                )
                figures[calls] = rss_kib / 1024
                print(
                    f"{args.docs:,} documents in {calls} upsert call(s): {seconds:.1f} s, "
                    f"peak RSS {rss_kib / 1024:,.0f} MiB"
                )
            print(f"peak RSS one call / ten calls: {figures[1] / figures[10]:.2f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    kill = sub.add_parser("kill", help="kill -9 during an upsert, then rerun (8.8 a)")
    kill.add_argument("--docs", type=int, default=20_000)
    kill.add_argument("--kills", type=int, default=5)
    kill.add_argument("--seed", type=int, default=1)
    rss = sub.add_parser("rss", help="peak RSS, one call against ten (8.8 c)")
    rss.add_argument("--docs", type=int, default=100_000)
    for p in (kill, rss):
        p.add_argument("--code", type=Path, default=ROOT, help="checkout the children import")
    args = parser.parse_args()
    print(
        f"machine load (1-min average) at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    if args.what == "kill":
        bench_kill(args)
    else:
        bench_rss(args)


if __name__ == "__main__":
    main()
