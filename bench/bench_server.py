"""Throughput of the local /embed_sparse server (BM25 backend), texts per second.

Starts ``chroma-sparse-ef serve`` as a subprocess on a free port (so clients and server do
not share a GIL, as in real use), then for each batch size and client count sends
requests for a fixed time and counts texts embedded. Texts are real English built
offline: docstrings of standard-library modules, cut to paragraph-sized chunks.

Usage::

    python bench/bench_server.py                 # ~35 s: batches 1/32/100 x 1/4/8 clients
    python bench/bench_server.py --seconds 1     # quicker, noisier
    python bench/bench_server.py --url http://127.0.0.1:8000   # an already running server
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

#: Modules whose docstrings make the corpus: prose-heavy, always installed.
_MODULES = (
    "argparse", "asyncio", "collections", "concurrent.futures", "contextlib", "csv",
    "dataclasses", "datetime", "decimal", "email", "functools", "http.client", "inspect",
    "io", "itertools", "json", "logging", "os", "pathlib", "pickle", "re", "shutil",
    "socket", "sqlite3", "ssl", "statistics", "string", "subprocess", "tarfile",
    "threading", "typing", "unittest", "urllib.parse", "zipfile",
)  # fmt: skip
#: Chunk size in characters: a paragraph, as RAG pipelines typically chunk documents.
_CHUNK_CHARS = 600
BATCH_SIZES = (1, 32, 100)
CLIENTS = (1, 4, 8)
HEADERS = {"x-chroma-token": "bench", "x-chroma-embedding-model": "prithivida/Splade_PP_en_v1"}


def corpus(min_texts: int = 2_000) -> list[str]:
    """Paragraph-sized English texts from stdlib docstrings, deterministic, no downloads."""
    texts: list[str] = []
    for name in _MODULES:
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj)
            if not doc or len(doc) < 200:
                continue
            doc = re.sub(r"\s+", " ", doc)
            texts += [doc[i : i + _CHUNK_CHARS] for i in range(0, len(doc), _CHUNK_CHARS)]
    texts = list(dict.fromkeys(t for t in texts if len(t) >= 100))
    while len(texts) < min_texts:
        texts += texts
    return texts


@contextmanager
def serve_subprocess() -> Iterator[str]:
    """Run `chroma-sparse-ef serve --port 0` and yield its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "chroma_sparse_ef.cli", "serve", "--port", "0", "--no-access-log"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if match := re.search(r"serving (http://\S+)/embed_sparse", line):
                url = match.group(1)
                break
        else:
            raise SystemExit("the server did not start")
        # Keep draining its output so a chatty server never blocks on a full pipe.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def run_cell(
    url: str, texts: list[str], batch: int, clients: int, seconds: float
) -> tuple[float, float]:
    """Send batches from `clients` threads for `seconds`; return (texts/s, median ms)."""
    deadline = time.perf_counter() + seconds
    done = [0] * clients
    latencies: list[float] = []
    lock = threading.Lock()

    def client(slot: int) -> None:
        offset = slot * 997
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.perf_counter() < deadline:
                chunk = [texts[(offset + i) % len(texts)] for i in range(batch)]
                offset += batch
                start = time.perf_counter()
                response = http.post(
                    "/embed_sparse",
                    headers=HEADERS,
                    json={"texts": chunk, "task": "", "target": ""},
                )
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                done[slot] += batch
                with lock:
                    latencies.append(elapsed)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return sum(done) / wall, statistics.median(latencies) * 1000


def main() -> None:
    """Parse arguments, run every cell, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per cell")
    parser.add_argument("--url", help="benchmark this running server instead of starting one")
    args = parser.parse_args()

    texts = corpus()
    mean_chars = sum(map(len, texts)) / len(texts)
    print(f"corpus: {len(texts)} texts, mean {mean_chars:.0f} chars (stdlib docstrings)")
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; backend: bm25")

    with serve_subprocess() if args.url is None else _given(args.url) as url:
        print(f"server: {url}   {args.seconds:g} s per cell\n")
        httpx.post(
            f"{url}/embed_sparse",
            headers=HEADERS,
            json={"texts": texts[:100], "task": "", "target": ""},
        )
        base: dict[int, float] = {}
        print(
            f"{'batch':>5} {'clients':>7} {'texts/s':>9} {'vs 1 client':>11} {'median ms/req':>13}"
        )
        for batch in BATCH_SIZES:
            for clients in CLIENTS:
                rate, median_ms = run_cell(url, texts, batch, clients, args.seconds)
                base.setdefault(batch, rate)
                print(
                    f"{batch:>5} {clients:>7} {rate:>9.0f} {rate / base[batch]:>10.2f}x {median_ms:>13.1f}"
                )


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url.rstrip("/")


if __name__ == "__main__":
    main()
