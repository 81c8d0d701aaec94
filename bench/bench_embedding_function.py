"""ChromaSparseEmbeddingFunction vs chromadb's ChromaCloudSpladeEmbeddingFunction.

Both talk to the same local server (`chroma-sparse-ef serve`, its own process, real BM25
vectors) in one run:

(a) the server adds 100 ms per request (a remote service); 2,048 texts; the built-in is
    driven in chunks of 64, as a user must (it sends everything in one request, which the
    hosted service refuses above 100 texts); ours runs with its defaults.
(b) no added latency; 256 texts of ~200 nonzeros; ours with labels, the built-in asking
    for tokens too (its non-spec `fetch_tokens` is ignored, so it gets none) and driven in
    chunks of 64 again (256 in one request is a 413); plus the client-side cost alone:
    parsing one captured response both ways.

Run: python bench/bench_embedding_function.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _local_server import server_process
from chromadb.utils.embedding_functions.chroma_bm25_embedding_function import (
    ChromaBm25EmbeddingFunction,
)
from chromadb.utils.embedding_functions.chroma_cloud_splade_embedding_function import (
    ChromaCloudSpladeEmbeddingFunction,
)
from chromadb.utils.sparse_embedding_utils import normalize_sparse_vector

from chroma_sparse_ef import ChromaSparseEmbeddingFunction
from chroma_sparse_ef._corpus import stdlib_docstrings
from chroma_sparse_ef._protocol import parse_response


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def long_texts(n: int, nnz: int) -> list[str]:
    """n texts of at least `nnz` distinct BM25 terms, made by joining stdlib docstrings."""
    bm25 = ChromaBm25EmbeddingFunction()
    docs = [d.text for d in stdlib_docstrings()]
    out: list[str] = []
    parts: list[str] = []
    for doc in docs * 3:
        parts.append(doc)
        if len(parts) % 4 == 0 and len(bm25([" ".join(parts)])[0].indices) >= nnz:
            out.append(" ".join(parts))
            parts = []
            if len(out) == n:
                return out
    raise RuntimeError("corpus too small")


def in_chunks(fn: Callable[[list[str]], list[object]], texts: list[str]) -> list[object]:
    """Drive chromadb's built-in as a user must: it would send everything in one request."""
    out: list[object] = []
    for i in range(0, len(texts), 64):
        out.extend(fn(texts[i : i + 64]))
    return out


def builtin(url: str) -> ChromaCloudSpladeEmbeddingFunction:
    os.environ["CHROMA_EMBED_URL"] = url
    os.environ.setdefault("CHROMA_API_KEY", "bench-placeholder")
    return ChromaCloudSpladeEmbeddingFunction()


def scenario_a(repeat: int) -> tuple[float, float]:
    texts = [d.text for d in stdlib_docstrings(2048)]
    assert len(texts) == 2048
    with server_process("--latency-ms", "100") as url:
        theirs = builtin(url)
        ours = ChromaSparseEmbeddingFunction(base_url=url)

        def run_theirs() -> list[object]:
            return in_chunks(theirs, texts)

        def run_ours() -> list[object]:
            return list(ours(texts))

        ours(texts[:1]), theirs(texts[:1])  # connections up, imports done
        assert run_ours() == run_theirs(), "the two functions disagree: not a fair comparison"
        t_theirs = median_time(run_theirs, repeat)
        t_ours = median_time(run_ours, repeat)
    return t_theirs, t_ours


def scenario_b(repeat: int) -> dict[str, float]:
    texts = long_texts(256, 200)
    with server_process() as url:
        theirs = builtin(url)
        theirs_tokens = ChromaCloudSpladeEmbeddingFunction(include_tokens=True)
        ours_labels = ChromaSparseEmbeddingFunction(base_url=url, fetch_labels=True)
        ours_plain = ChromaSparseEmbeddingFunction(base_url=url)
        vectors = ours_labels(texts)
        assert all(v.labels is not None and len(v.labels) == len(v.indices) for v in vectors)
        nnz = statistics.mean(len(v.indices) for v in vectors)
        assert [v.indices for v in in_chunks(theirs, texts)] == [v.indices for v in vectors]  # type: ignore[attr-defined]
        result = {
            "nnz": nnz,
            "theirs": median_time(lambda: in_chunks(theirs_tokens, texts), repeat),
            "ours_labels": median_time(lambda: ours_labels(texts), repeat),
            "ours_plain": median_time(lambda: ours_plain(texts), repeat),
        }
        body = httpx.post(
            url + "/embed_sparse",
            json={"texts": texts[:100], "fetch_labels": True, "task": "", "target": ""},
            headers={
                "x-chroma-token": "x",
                "x-chroma-embedding-model": "prithivida/Splade_PP_en_v1",
            },
            timeout=120,
        ).content

    def parse_theirs() -> object:
        return [
            normalize_sparse_vector(e["indices"], e["values"], e.get("labels"))
            for e in json.loads(body)["embeddings"]
        ]

    def parse_ours() -> object:
        return parse_response(body, expected=100, fetch_labels=True, model="m")

    result["parse_theirs"] = median_time(parse_theirs, max(repeat, 5))
    result["parse_ours"] = median_time(parse_ours, max(repeat, 5))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    args = parser.parse_args()

    t_theirs, t_ours = scenario_a(args.repeat)
    print("(a) 2,048 texts, server adds 100 ms per request")
    print(f"    chromadb built-in, chunks of 64 : {t_theirs:7.3f} s")
    print(f"    chroma-sparse-ef, defaults      : {t_ours:7.3f} s")
    print(f"    ratio                           : {t_theirs / t_ours:7.1f}x faster (goal >= 6x)")

    b = scenario_b(args.repeat)
    print(f"(b) 256 texts, {b['nnz']:.0f} nonzeros on average, no added latency")
    print(f"    chromadb built-in (64s, no labels): {b['theirs'] * 1e3:7.1f} ms")
    print(
        f"    chroma-sparse-ef, with labels   : {b['ours_labels'] * 1e3:7.1f} ms   ratio {b['theirs'] / b['ours_labels']:.2f}x"
    )
    print(
        f"    chroma-sparse-ef, no labels     : {b['ours_plain'] * 1e3:7.1f} ms   ratio {b['theirs'] / b['ours_plain']:.2f}x"
    )
    print("    client side only (parse + convert one 100-text response with labels):")
    print(f"    chromadb built-in               : {b['parse_theirs'] * 1e3:7.1f} ms")
    print(
        f"    chroma-sparse-ef                : {b['parse_ours'] * 1e3:7.1f} ms   ratio {b['parse_theirs'] / b['parse_ours']:.2f}x"
    )


if __name__ == "__main__":
    main()
