"""Search quality of each leg: MRR@10 and recall@10 for dense, sparse and hybrid search.

Corpus: the docstrings of the installed standard library (`stdlib_docstrings`, about 3,000,
the demo's corpus). Queries: known-item search with hand-written labels (each query, the
standard-library object(s) that answer it). Two sets:

- ``heldout`` (default): 40 queries written for this benchmark and never used to tune
  anything, half naming the object (identifier queries), half describing the job in
  other words (paraphrase queries). Documents are the docstrings alone, as in the demo.
- ``notebook``: the 30 queries of notebooks/02_hybrid_search.ipynb, read from the notebook
  itself; documents are ``"<dotted name>: <docstring>"``, as the notebook builds them.

Legs, all on embedded Chroma through `HybridCollection` (RRF k=60, 100 candidates per leg):

- dense: whichever dense function `default_dense_function(--dense)` gives, named in the
  output (the offline hashing embedding, or Chroma's default all-MiniLM-L6-v2);
- sparse BM25 without IDF: chromadb's own ``ChromaBm25EmbeddingFunction`` (the weights the
  local server serves), ranked by term weights alone;
- sparse BM25 with Cloud's IDF: the same vectors in a collection opened with ``bm25=True``,
  when this checkout's `HybridCollection.get_or_create` has that option, else "n/a";
- hybrid: dense + each sparse leg, fused with RRF.

MRR@10: mean of 1/position of the first answer in the top 10 (0 if none); recall@10: the
share of queries with an answer in the top 10 (success@10, for known-item search).

Run (hashing dense leg; never touches the network)::

    CHROMA_SPARSE_EF_DENSE=hashing python bench/bench_quality.py

With Chroma's default model, on a machine where it is cached (the model is loaded from
chromadb's cache; nothing is downloaded with ``--dense default`` if it is there)::

    python bench/bench_quality.py --dense default
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import chromadb
from chromadb.utils.embedding_functions import ChromaBm25EmbeddingFunction

from chroma_sparse_ef import HybridCollection, default_dense_function, stdlib_docstrings
from chroma_sparse_ef._progress import progress_bar

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_hybrid_search.ipynb"
#: Positions looked at: MRR@10 and recall@10.
CUTOFF = 10
#: Texts per dense embedding call while building.
DENSE_BATCH = 64
#: Records per upsert.
WRITE_BATCH = 1_000

#: (kind, query, answers). Written for this benchmark, not used to tune anything.
HELDOUT: list[tuple[str, str, set[str]]] = [
    ("identifier", "gzip.compress mtime", {"gzip.compress"}),
    ("identifier", "zipfile is_zipfile", {"zipfile.is_zipfile"}),
    ("identifier", "shutil.make_archive base_name root_dir", {"shutil.make_archive"}),
    ("identifier", "asyncio gather return_exceptions", {"asyncio.tasks.gather"}),
    ("identifier", "asyncio wait_for timeout", {"asyncio.tasks.wait_for"}),
    ("identifier", "urlencode doseq", {"urllib.parse.urlencode"}),
    (
        "identifier",
        "parse_qs keep_blank_values",
        {"urllib.parse.parse_qs", "urllib.parse.parse_qsl"},
    ),
    ("identifier", "ssl create_default_context cafile", {"ssl.create_default_context"}),
    ("identifier", "socket getaddrinfo", {"socket.getaddrinfo"}),
    ("identifier", "Popen communicate input timeout", {"subprocess.Popen.communicate"}),
    ("identifier", "logging basicConfig format level", {"logging.basicConfig"}),
    (
        "identifier",
        "RotatingFileHandler maxBytes backupCount",
        {"logging.handlers.RotatingFileHandler"},
    ),
    ("identifier", "NamedTemporaryFile delete", {"tempfile.NamedTemporaryFile"}),
    ("identifier", "contextlib suppress", {"contextlib.suppress"}),
    ("identifier", "get_close_matches cutoff", {"difflib.get_close_matches"}),
    ("identifier", "textwrap shorten placeholder", {"textwrap.shorten"}),
    ("identifier", "statistics fmean weights", {"statistics.fmean"}),
    ("identifier", "Fraction limit_denominator", {"fractions.Fraction.limit_denominator"}),
    ("identifier", "operator itemgetter", {"operator.itemgetter"}),
    ("identifier", "namedtuple defaults rename", {"collections.namedtuple"}),
    ("paraphrase", "compute the SHA256 hash of data", {"hashlib.file_digest"}),
    (
        "paraphrase",
        "compress bytes so they take less space",
        {"gzip.compress", "bz2.compress", "lzma.compress"},
    ),
    ("paraphrase", "check whether a file is a zip archive", {"zipfile.is_zipfile"}),
    ("paraphrase", "pack a folder into a compressed archive file", {"shutil.make_archive"}),
    (
        "paraphrase",
        "run several coroutines concurrently and collect their results",
        {"asyncio.tasks.gather"},
    ),
    ("paraphrase", "give up on an awaitable if it takes too long", {"asyncio.tasks.wait_for"}),
    ("paraphrase", "turn a dictionary into a URL query string", {"urllib.parse.urlencode"}),
    ("paraphrase", "download the contents of a web page", {"urllib.request.urlopen"}),
    ("paraphrase", "configure the root logger once at program start", {"logging.basicConfig"}),
    (
        "paraphrase",
        "write log messages to a file that rolls over when it gets big",
        {"logging.handlers.RotatingFileHandler"},
    ),
    ("paraphrase", "ignore a specific exception inside a with block", {"contextlib.suppress"}),
    (
        "paraphrase",
        "suggest similar words for a misspelled name",
        {"difflib.get_close_matches"},
    ),
    (
        "paraphrase",
        "cut a long string down to fit a width with an ellipsis",
        {"textwrap.shorten"},
    ),
    ("paraphrase", "average of a list of numbers", {"statistics.mean", "statistics.fmean"}),
    (
        "paraphrase",
        "approximate a float with a simple ratio of small integers",
        {"fractions.Fraction.limit_denominator"},
    ),
    ("paraphrase", "open a URL in the user's web browser", {"webbrowser.open"}),
    (
        "paraphrase",
        "find files whose names match a wildcard pattern",
        {"glob.glob", "glob.iglob", "fnmatch.fnmatch", "fnmatch.filter"},
    ),
    ("paraphrase", "compare two directories and list their differences", {"filecmp.dircmp"}),
    (
        "paraphrase",
        "read an XML file into a tree of elements",
        {"xml.etree.ElementTree.parse", "xml.etree.ElementTree.ElementTree.parse"},
    ),
    ("paraphrase", "turn HTML entities like &amp; back into characters", {"html.unescape"}),
]


def notebook_queries(path: Path = NOTEBOOK) -> list[tuple[str, str, set[str]]]:
    """The notebook's ``LABELLED`` list, read from its source (nothing in it is run)."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or "LABELLED = [" not in source:
            continue
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "LABELLED":
                value: list[tuple[str, str, set[str]]] = ast.literal_eval(node.value)
                return value
    raise SystemExit(f"no LABELLED list in {path}")


def has_bm25_option() -> bool:
    """Whether this checkout's `HybridCollection.get_or_create` takes ``bm25`` (issue 11)."""
    return "bm25" in inspect.signature(HybridCollection.get_or_create).parameters


def first_answer_ranks(
    collection: HybridCollection,
    labelled: Sequence[tuple[str, str, set[str]]],
    **search_args: Any,
) -> list[int | None]:
    """0-based position of each query's first answer in the top 10, None when absent."""
    ranks: list[int | None] = []
    for _, query, answers in labelled:
        hits = collection.search(query, limit=CUTOFF, select=("#score",), **search_args)
        ranks.append(next((r for r, id_ in enumerate(hits.ids) if id_ in answers), None))
    return ranks


def metrics(ranks: Sequence[int | None]) -> dict[str, float]:
    found = [r for r in ranks if r is not None]
    return {
        "MRR@10": sum(1 / (r + 1) for r in found) / len(ranks),
        "recall@10": len(found) / len(ranks),
    }


def build(
    client: Any,
    name: str,
    docs: Sequence[tuple[str, str]],
    dense_function: Any,
    dense_vectors: list[Any],
    bm25: bool | None,
) -> HybridCollection:
    options: dict[str, Any] = {} if bm25 is None else {"bm25": bm25}
    collection = HybridCollection.get_or_create(
        client,
        name,
        sparse_embedding_function=ChromaBm25EmbeddingFunction(),
        embedding_function=dense_function,
        **options,
    )
    for i in range(0, len(docs), WRITE_BATCH):
        chunk = docs[i : i + WRITE_BATCH]
        collection.upsert(
            ids=[d[0] for d in chunk],
            documents=[d[1] for d in chunk],
            embeddings=dense_vectors[i : i + WRITE_BATCH],
        )
    return collection


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dense",
        choices=("auto", "default", "hashing"),
        default=None,
        help="dense function (default: CHROMA_SPARSE_EF_DENSE, else auto)",
    )
    parser.add_argument("--queries", choices=("heldout", "notebook"), default="heldout")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    labelled = HELDOUT if args.queries == "heldout" else notebook_queries()
    with_names = args.queries == "notebook"
    corpus = stdlib_docstrings()
    known = {d.id for d in corpus}
    missing = sorted({a for _, _, answers in labelled for a in answers} - known)
    # An answer absent from this Python's library is left out of its query's set; a
    # query with no answer left would count as a miss that no search can avoid.
    unanswerable = [q for _, q, answers in labelled if not answers & known]
    if unanswerable:
        raise SystemExit(f"queries with no answer in this corpus: {unanswerable}")
    docs = [(d.id, f"{d.id}: {d.text}" if with_names else d.text) for d in corpus]

    dense = default_dense_function(args.dense)
    print(f"dense leg: {dense}")
    print(f"corpus: {len(docs)} stdlib docstrings (Python {sys.version.split()[0]})")
    print(
        f"queries: {args.queries}, {len(labelled)} "
        f"({'documents prefixed with their dotted name' if with_names else 'docstrings alone'})"
    )
    if missing:
        print(f"answers not in this corpus (ignored): {missing}")

    start = time.perf_counter()
    texts = [d[1] for d in docs]
    vectors: list[Any] = []
    with progress_bar(True, len(texts), f"dense embedding ({dense.name})") as bar:
        for i in range(0, len(texts), DENSE_BATCH):
            vectors.extend(dense.function(texts[i : i + DENSE_BATCH]))
            bar.update(len(texts[i : i + DENSE_BATCH]))
    dense_s = time.perf_counter() - start

    idf_available = has_bm25_option()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as path:
        client = chromadb.PersistentClient(path=path)
        start = time.perf_counter()
        plain = build(
            client, "plain", docs, dense.function, vectors, False if idf_available else None
        )
        idf = build(client, "idf", docs, dense.function, vectors, True) if idf_available else None
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        runs: list[tuple[str, HybridCollection | None, dict[str, Any]]] = [
            ("dense", plain, {"mode": "dense"}),
            ("sparse BM25, no IDF", plain, {"mode": "sparse"}),
            ("sparse BM25, Cloud's IDF", idf, {"mode": "sparse"}),
            ("hybrid (dense + BM25, no IDF)", plain, {"mode": "hybrid"}),
            ("hybrid (dense + BM25 with IDF)", idf, {"mode": "hybrid"}),
        ]
        by_kind: dict[str, dict[str, dict[str, float]]] = {}
        for leg, collection, search_args in runs:
            if collection is None:
                rows.append({"leg": leg, "MRR@10": None, "recall@10": None})
                continue
            ranks = first_answer_ranks(collection, labelled, **search_args)
            rows.append({"leg": leg, **metrics(ranks)})
            by_kind[leg] = {
                kind: metrics(
                    [r for r, (k, _, _) in zip(ranks, labelled, strict=True) if k == kind]
                )
                for kind in ("identifier", "paraphrase")
            }
        search_s = time.perf_counter() - start
        plain.close()
        if idf is not None:
            idf.close()

    print(
        f"\ndense embedding {dense_s:.0f} s, building {build_s:.0f} s, "
        f"{sum(r['MRR@10'] is not None for r in rows) * len(labelled)} searches {search_s:.0f} s"
        " (2 shared cores, loaded machine)\n"
    )
    dense_name = dense.name.split(" (")[0] if dense.kind == "default" else "hashing"
    print(f"| leg (dense: {dense_name}) | MRR@10 | recall@10 |")
    print("|---|---|---|")
    for row in rows:
        if row["MRR@10"] is None:
            print(f"| {row['leg']} | n/a (not available) | n/a (not available) |")
        else:
            print(f"| {row['leg']} | {row['MRR@10']:.2f} | {row['recall@10']:.2f} |")
    print("\nMRR@10 by kind of query:")
    print("| leg | identifier | paraphrase |")
    print("|---|---|---|")
    for leg, kinds in by_kind.items():
        print(
            f"| {leg} | {kinds['identifier']['MRR@10']:.2f} | {kinds['paraphrase']['MRR@10']:.2f} |"
        )
    if args.json:
        print(json.dumps({"dense": dense.name, "queries": args.queries, "rows": rows}))


if __name__ == "__main__":
    main()
