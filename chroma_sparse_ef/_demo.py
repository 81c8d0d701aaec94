"""`chroma-sparse-ef demo` and `search`: the whole flow in one command, offline by default.

What runs is decided from the environment and said in the output:

- sparse vectors: the hosted service when ``CHROMA_API_KEY`` is set (SPLADE), else the
  local server started in-process (BM25 vectors, announced as such; the collection is
  then opened with ``bm25=True``, so BM25 is ranked with Chroma Cloud's IDF);
- Chroma: a Chroma Cloud collection when ``CHROMA_API_KEY``, ``CHROMA_TENANT`` and
  ``CHROMA_DATABASE`` are all set, else a PersistentClient under a printed path;
- dense vectors: Chroma's default model when it is cached or can be fetched, else the
  offline hashing embedding (`default_dense_function` says which and why, in one line).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._chroma_compat import stored_embedding_function
from ._constants import BASE_URL_ENV_VAR, DEFAULT_API_KEY_ENV_VAR
from ._corpus import stdlib_docstrings
from ._dense import CHROMA_DEFAULT_MODEL, DENSE_ENV_VAR, DenseChoice, default_dense_function
from ._embedding_function import ChromaSparseEmbeddingFunction
from ._exceptions import ConfigurationError
from ._hashing import HASHING_FUNCTION_NAME
from ._models import DEFAULT_MODEL
from ._progress import progress_bar

if TYPE_CHECKING:
    from rich.console import Console

    from .hybrid import HybridCollection, SearchResults

__all__ = [
    "DEFAULT_COLLECTION",
    "DEFAULT_PATH",
    "DEMO_QUERIES",
    "Setup",
    "demo",
    "open_setup",
    "search",
]

#: Where the demo keeps its PersistentClient, relative to the working directory.
DEFAULT_PATH = Path("chroma-sparse-ef-demo")
DEFAULT_COLLECTION = "stdlib_docs"
#: Queries where the legs differ: exact identifiers (sparse shines), paraphrases (dense
#: shines when it is a semantic model), and mixes.
DEMO_QUERIES = (
    "json.dumps sort_keys indent",
    "how do I parse command line arguments",
    "compute the SHA256 hash of data",
    "TimeoutError when a socket connect takes too long",
    "decode base64 encoded bytes",
)
Mode = Literal["dense", "sparse", "hybrid"]
#: Documents per `upsert` during the demo's ingest: the progress bar moves this often,
#: and each call still fills several of the sparse function's 100-text requests, which
#: it sends concurrently.
INGEST_CHUNK = 500
#: Seconds to wait for the local server's ``/healthz`` (it runs in this process).
HEALTH_TIMEOUT_S = 5.0


@dataclass
class Setup:
    """What the demo runs on, and the sentences that say so.

    Attributes:
        sparse_kind: What the sparse vectors are, in two words for the progress bar
            (``"BM25"`` or ``"SPLADE"``).
        bm25: Whether the collection ranks its sparse leg with Cloud's BM25 IDF; None
            when this version of `HybridCollection` has no such option.
    """

    collection: HybridCollection
    dense: DenseChoice
    sparse_source: str
    chroma_source: str
    sparse_kind: str = "SPLADE"
    bm25: bool | None = None


@contextlib.contextmanager
def open_setup(
    *,
    path: Path = DEFAULT_PATH,
    name: str = DEFAULT_COLLECTION,
    local: bool = False,
    create: bool = True,
    fresh: bool = False,
) -> Iterator[Setup]:
    """Open (or create) the demo's hybrid collection on whatever this environment offers.

    Args:
        path: PersistentClient folder (embedded Chroma).
        name: Collection name.
        local: Use the local server and embedded Chroma even if keys are set.
        create: Create the collection if missing (else it must exist).
        fresh: Delete the collection first (embedded Chroma only).

    Yields:
        The opened collection and the descriptions of what runs.
    """
    import chromadb

    from .hybrid import HybridCollection

    with contextlib.ExitStack() as stack:
        key = None if local else os.environ.get(DEFAULT_API_KEY_ENV_VAR)
        serves_bm25 = False
        if key:
            sparse_source = "Chroma's hosted embedding service (SPLADE): CHROMA_API_KEY is set"
            sparse_kind = "SPLADE"
        else:
            from .server import create_app, run_in_thread

            server = stack.enter_context(run_in_thread(create_app()))
            # The env var, not base_url: a URL from the environment is not persisted in
            # the collection, so `search` can reopen it later on another port.
            stack.enter_context(_env(BASE_URL_ENV_VAR, server.url))
            reason = "--local" if local else "no CHROMA_API_KEY"
            serves_bm25 = _server_serves_bm25(server.url, DEFAULT_MODEL)
            sparse_kind = "BM25" if serves_bm25 else "local"
            what = "BM25 vectors" if serves_bm25 else "vectors from its backend"
            sparse_source = f"local server at {server.url} ({reason}): {what}, not SPLADE"
        # Built once the URL is in the environment, which it reads at construction. The
        # demo draws one bar for the whole ingest, so the function draws none.
        sparse = ChromaSparseEmbeddingFunction(fetch_labels=True)

        cloud = bool(key and os.environ.get("CHROMA_TENANT") and os.environ.get("CHROMA_DATABASE"))
        client: Any
        if cloud:
            client = chromadb.CloudClient()
            chroma_source = (
                f"Chroma Cloud, tenant {os.environ['CHROMA_TENANT']}, database "
                f"{os.environ['CHROMA_DATABASE']} (native Search with Rrf)"
            )
        else:
            if path.exists() and not path.is_dir():
                raise ConfigurationError(f"{path} is a file; --path needs a folder for Chroma")
            client = chromadb.PersistentClient(path=str(path))
            chroma_source = f"embedded Chroma at {path.resolve()} (exact local sparse index)"
            if fresh:
                with contextlib.suppress(Exception):
                    client.delete_collection(name)
        # An existing collection is searched with the dense function it was built with:
        # a query embedded by another model would be compared with vectors it never made.
        stored = None if create else _stored_dense(client, name)
        dense = stored or default_dense_function()
        options: dict[str, Any] = {}
        if create:
            if serves_bm25:
                # The server's vectors are saturated term frequencies; Cloud ranks such
                # vectors with query-time IDF, and so does the local index with bm25=True.
                options["bm25"] = True
            collection = HybridCollection.get_or_create(
                client,
                name,
                sparse_embedding_function=sparse,
                embedding_function=dense.function,
                **options,
            )
        else:
            from chromadb.errors import NotFoundError

            try:
                collection = HybridCollection.open(client, name, embedding_function=dense.function)
            except NotFoundError as exc:
                raise ConfigurationError(
                    f"no collection {name!r} in {chroma_source}: run `chroma-sparse-ef demo` "
                    "first, or pass --collection"
                ) from exc
        bm25 = collection.bm25
        if sparse_kind == "BM25":
            sparse_source += (
                "; ranked with Chroma Cloud's BM25 IDF (bm25=True)"
                if bm25
                else "; ranked by term weights alone, without IDF (bm25=False)"
            )
        yield Setup(collection, dense, sparse_source, chroma_source, sparse_kind, bm25)


def _stored_dense(client: Any, name: str) -> DenseChoice | None:
    """The dense function collection `name` was built with, if it is one the demo knows."""
    try:
        function = stored_embedding_function(client.get_collection(name))
    except Exception:
        # No such collection (reported when it is opened), or no readable configuration.
        return None
    stored = getattr(function, "name", lambda: None)()
    kinds = {
        HASHING_FUNCTION_NAME: "hashing",
        "default": "default",
        "onnx_mini_lm_l6_v2": "default",
    }
    kind = kinds.get(stored) if isinstance(stored, str) else None
    if kind is None:
        return None
    # Its name and kind as `default_dense_function` gives them; the function chromadb
    # rebuilt from the stored config, so every parameter is the one the vectors had.
    # Chroma's model goes through the bounded, clean fetch of `auto`, not chromadb's.
    template = default_dense_function("hashing" if kind == "hashing" else "auto")
    if template.kind != kind:
        # Without the hint to use hashing: it cannot search vectors MiniLM made.
        why = template.reason.split(f"; set {DENSE_ENV_VAR}")[0]
        raise ConfigurationError(
            f"the collection {name!r} was built with {CHROMA_DEFAULT_MODEL}, which cannot "
            f"run here: {why}"
        )
    return DenseChoice(
        function, template.name, f"the collection {name!r} was built with it", template.kind
    )


def _server_serves_bm25(url: str, model: str) -> bool:
    """Whether the local server's ``/healthz`` routes `model` to its BM25 backend."""
    import httpx

    try:
        health = httpx.get(f"{url.rstrip('/')}/healthz", timeout=HEALTH_TIMEOUT_S).json()
    except (httpx.HTTPError, ValueError):
        return False
    explicit = health.get("bm25") if isinstance(health, dict) else None
    if isinstance(explicit, bool):
        return explicit
    routes = health.get("models") if isinstance(health, dict) else None
    return isinstance(routes, dict) and routes.get(model) == "bm25"


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def demo(
    console: Console,
    *,
    path: Path = DEFAULT_PATH,
    limit: int | None = None,
    queries: Sequence[str] = DEMO_QUERIES,
    top: int = 5,
    local: bool = False,
    fresh: bool = False,
) -> dict[str, float]:
    """Ingest the standard library's docstrings and compare dense, sparse and hybrid.

    Args:
        console: Where to print (rich).
        path: PersistentClient folder.
        limit: Ingest at most this many documents (None: all, about 3,000).
        queries: The queries to answer.
        top: Rows per leg.
        local: Force the local server and embedded Chroma.
        fresh: Rebuild the collection from scratch.

    Returns:
        Timings in seconds: ``ingest`` and ``search_median``.
    """
    timings: dict[str, float] = {}
    with open_setup(path=path, local=local, fresh=fresh) as setup:
        _describe(console, setup)
        docs = stdlib_docstrings(limit)
        collection = setup.collection
        if collection.count() >= len(docs) and not fresh:
            console.print(
                f"[dim]{collection.count()} documents already ingested; --fresh rebuilds[/dim]"
            )
            timings["ingest"] = 0.0
        else:
            console.print(f"ingesting {len(docs)} docstrings of the Python standard library ...")
            start = time.perf_counter()
            desc = f"ingesting: {setup.sparse_kind} sparse + {_short(setup.dense)} dense"
            with progress_bar(True, len(docs), desc, unit="doc") as bar:
                for i in range(0, len(docs), INGEST_CHUNK):
                    chunk = docs[i : i + INGEST_CHUNK]
                    collection.upsert(
                        ids=[d.id for d in chunk],
                        documents=[d.text for d in chunk],
                        metadatas=[{"module": d.module, "kind": d.kind} for d in chunk],
                    )
                    bar.update(len(chunk))
            timings["ingest"] = time.perf_counter() - start
            console.print(f"ingested {len(docs)} documents in {timings['ingest']:.1f} s")
        latencies: list[float] = []
        for query in queries:
            results: dict[Mode, SearchResults] = {}
            for mode in ("dense", "sparse", "hybrid"):
                start = time.perf_counter()
                results[mode] = collection.search(query, limit=top, mode=mode)
                latencies.append(time.perf_counter() - start)
            _show(console, query, results)
        latencies.sort()
        timings["search_median"] = latencies[len(latencies) // 2] if latencies else 0.0
        console.print(
            f"\nsearch latency, median over {len(latencies)} searches: "
            f"{timings['search_median'] * 1000:.1f} ms (embedding the query included)"
        )
        console.print(f'try: [bold]chroma-sparse-ef search "your question" --path {path}[/bold]')
    return timings


def search(
    console: Console,
    query: str,
    *,
    path: Path = DEFAULT_PATH,
    name: str = DEFAULT_COLLECTION,
    mode: Mode = "hybrid",
    top: int = 10,
    local: bool = False,
) -> None:
    """Search an existing collection (the demo's by default) and print the hits."""
    cloud = bool(os.environ.get("CHROMA_TENANT") and os.environ.get("CHROMA_DATABASE"))
    if not cloud and not path.is_dir():
        # Checked before opening: a PersistentClient would create the folder.
        raise ConfigurationError(
            f"no Chroma data at {path}: run `chroma-sparse-ef demo --path {path}` first"
        )
    with open_setup(path=path, name=name, local=local, create=False) as setup:
        _describe(console, setup)
        results = setup.collection.search(query, limit=top, mode=mode)
        if not results:
            console.print(f"no matches for {query!r} ({mode})")
            return
        console.print(_table(f"{mode}: {query}", results, mode))


def _short(dense: DenseChoice) -> str:
    return "hashing" if dense.kind == "hashing" else dense.name.split(" (")[0]


def _describe(console: Console, setup: Setup) -> None:
    console.print(f"[bold]sparse[/bold]  {setup.sparse_source}")
    console.print(f"[bold]dense[/bold]   {setup.dense}")
    console.print(f"[bold]chroma[/bold]  {setup.chroma_source}")
    if setup.collection.backend == "local":
        from .hybrid._kernel import describe

        console.print(f"[bold]index[/bold]   {describe()}")


def _show(console: Console, query: str, results: dict[Mode, SearchResults]) -> None:
    from rich.table import Table

    table = Table(title=f"[bold]{query}", title_justify="left", expand=True, show_lines=True)
    table.add_column("#", justify="right", style="dim", no_wrap=True)
    # Ids wrap rather than being cut: two long ids sharing a prefix must stay distinguishable.
    table.add_column("dense", overflow="fold")
    table.add_column("sparse [green](matching tokens)[/green]", overflow="fold")
    table.add_column("hybrid [dim](rank in dense · sparse)[/dim]", overflow="fold")
    rows = max((len(r) for r in results.values()), default=0)
    for i in range(rows):
        cells = [_cell(results[mode], i, mode) for mode in ("dense", "sparse", "hybrid")]
        table.add_row(str(i + 1), *cells)
    console.print(table)


def _table(title: str, results: SearchResults, mode: Mode) -> Any:
    from rich.table import Table

    table = Table(title=title, expand=True, title_justify="left", show_lines=True)
    table.add_column("#", justify="right", style="dim", no_wrap=True)
    table.add_column("id, why", overflow="fold", ratio=1)
    table.add_column("document", overflow="ellipsis", no_wrap=True, ratio=2)
    for i, hit in enumerate(results):
        first_line = (hit.document or "").strip().splitlines()[0] if hit.document else ""
        table.add_row(str(i + 1), _cell(results, i, mode), first_line)
    return table


def _cell(results: SearchResults, i: int, mode: Mode) -> str:
    from rich.markup import escape

    if i >= len(results):
        return ""
    hit = results[i]
    text = escape(hit.id)
    if mode != "dense" and hit.matches:
        text += (
            "\n[green]"
            + escape(" ".join(m.label or str(m.index) for m in hit.matches[:4]))
            + "[/green]"
        )
    if mode == "hybrid":
        text += f"\n[dim]{_rank(hit.dense_rank)} · {_rank(hit.sparse_rank)}[/dim]"
    return text


def _rank(rank: int | None) -> str:
    return "—" if rank is None else str(rank + 1)
