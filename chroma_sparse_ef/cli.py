"""The ``chroma-sparse-ef`` command.

One typer app; each command is a function registered on `app` (``serve``, ``embed``,
``models``), so more commands (``demo``, ``search``) are added the same way. Heavy imports (FastAPI,
uvicorn, chromadb) happen inside the commands, so ``--help`` stays fast. Expected
failures print one line, ``chroma-sparse-ef: error: ...``, and exit with status 1.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ._constants import BASE_URL_ENV_VAR, DEFAULT_API_KEY_ENV_VAR
from ._exceptions import ConfigurationError, EmbeddingError
from ._models import DEFAULT_MODEL, MODELS
from ._version import __version__
from .server import API_KEY_ENV_VAR, DEFAULT_HOST, DEFAULT_PORT, ServerLimits

if TYPE_CHECKING:
    from chromadb.base_types import SparseVector

__all__ = ["app", "main"]

app = typer.Typer(
    name="chroma-sparse-ef",
    help="Sparse embeddings from Chroma's embedding service, and hybrid search.",
    no_args_is_help=True,
    add_completion=False,
    # A failure is one line (see fail()), never a page of locals that could hold a key.
    pretty_exceptions_enable=False,
    # Click's plain help: rich's panels print `<bool>` beside plain flags and cut long
    # values (an env var name) at 80 columns; plain help wraps whole words instead.
    rich_markup_mode=None,
)


#: The server's default limits, shown as the defaults of `serve`'s options.
_LIMITS = ServerLimits()


class LogLevel(str, enum.Enum):
    """Log levels ``serve`` accepts."""

    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


def fail(message: str) -> NoReturn:
    """Print ``chroma-sparse-ef: error: <message>`` on stderr and exit with status 1.

    Args:
        message: One line saying what went wrong. Never include a secret.

    Raises:
        typer.Exit: Always.
    """
    typer.echo(f"chroma-sparse-ef: error: {message}", err=True)
    raise typer.Exit(code=1)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Show the version.")] = False,
) -> None:
    """Sparse embeddings from Chroma's embedding service, and hybrid search."""
    # Handled here, after parsing, not in an eager callback: an eager callback exits
    # before the rest of the line is read, so `--version true` would pass unnoticed;
    # here click has already refused `true` as an unknown command.
    if version:
        typer.echo(f"chroma-sparse-ef {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(code=2)


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on. Loopback unless you mean otherwise.")
    ] = DEFAULT_HOST,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")
    ] = DEFAULT_PORT,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar=API_KEY_ENV_VAR,
            show_default=False,
            help="Key clients must send in x-chroma-token (else 401). Prefer the "
            "environment variable: a command-line argument shows in `ps`. Without a "
            "key, any token is accepted.",
        ),
    ] = None,
    rate_limit: Annotated[
        str | None,
        typer.Option(
            help="Requests allowed per token, e.g. 10/s or 600/min; above it: 429 with Retry-After."
        ),
    ] = None,
    latency_ms: Annotated[
        float, typer.Option(min=0.0, help="Delay added to every request, to imitate a network.")
    ] = 0.0,
    log_level: Annotated[
        LogLevel, typer.Option(case_sensitive=False, help="Log level.")
    ] = LogLevel.info,
    access_log: Annotated[
        bool, typer.Option(help="Log one line per request (never headers).")
    ] = True,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Largest request body in bytes; larger: 413.")
    ] = _LIMITS.max_body_bytes,
    max_connections: Annotated[
        int,
        typer.Option(min=1, help="Open connections at once; more are closed when accepted."),
    ] = _LIMITS.max_connections,
    header_timeout: Annotated[
        float,
        typer.Option(
            min=0.001, help="Seconds a client has to send a request's headers, else closed."
        ),
    ] = _LIMITS.header_timeout_s,
    body_timeout: Annotated[
        float,
        typer.Option(min=0.001, help="Seconds a client has to send a body; slower: 408."),
    ] = _LIMITS.body_timeout_s,
    keep_alive: Annotated[
        float, typer.Option(min=1.0, help="Seconds an idle kept-alive connection stays open.")
    ] = _LIMITS.keep_alive_s,
    splade: Annotated[
        list[str] | None,
        typer.Option(
            "--splade",
            metavar="MODEL=DIR",
            show_default=False,
            help="Serve MODEL with real SPLADE vectors from a local Hugging Face BERT "
            "masked-LM directory (config.json, model.safetensors, tokenizer.json), e.g. "
            "prithivida/Splade_PP_en_v1=/models/splade_pp. Repeatable; other models stay BM25.",
        ),
    ] = None,
) -> None:
    """Serve POST /embed_sparse locally (BM25, or SPLADE with --splade), like Chroma's embedding service.

    Also fixed: at most 100 texts per request, 100,000 characters per text, 16 KiB of
    headers, 64 MiB of bodies in memory at once (then 503); GET /healthz lists them all.
    """
    try:
        from .server import Bm25Backend, SparseBackend, bind_socket, create_app
        from .server import serve as serve_forever
    except ImportError as exc:
        fail(str(exc))
    splade_dirs = _parse_splade_options(splade or [])
    try:
        backends: list[SparseBackend] | None = None
        if splade_dirs:
            from .server import SpladeBackend

            # SPLADE first: routing gives each model to the first backend that lists it.
            backends = [SpladeBackend.from_dirs(splade_dirs), Bm25Backend()]
        limits = _LIMITS.replace(
            max_body_bytes=max_body_bytes,
            max_buffered_bytes=max(_LIMITS.max_buffered_bytes, max_body_bytes),
            max_connections=max_connections,
            header_timeout_s=header_timeout,
            body_timeout_s=body_timeout,
            keep_alive_s=keep_alive,
        )
        application = create_app(
            api_key=api_key,
            rate_limit=rate_limit,
            latency_ms=latency_ms,
            backends=backends,
            limits=limits,
        )
        sock = bind_socket(host, port)
    except ConfigurationError as exc:
        fail(str(exc))

    def announce(url: str) -> None:
        # Printed only once the socket accepts connections: scripts wait for this line.
        typer.echo(f"chroma-sparse-ef: serving {url}/embed_sparse", err=True)

    with sock:
        try:
            serve_forever(
                application,
                sock,
                log_level=log_level.value,
                access_log=access_log,
                on_ready=announce,
            )
        except ImportError as exc:
            fail(str(exc))


def _parse_splade_options(specs: list[str]) -> dict[str, str]:
    """Map each ``--splade MODEL=DIR`` to its model name, or fail with one line."""
    dirs: dict[str, str] = {}
    for spec in specs:
        # Model names never hold "=", directories might: split at the first one.
        model, sep, directory = spec.partition("=")
        if not (sep and model and directory):
            fail(f"--splade takes MODEL=DIR, got {spec!r}")
        if model in dirs:
            fail(f"--splade names {model!r} twice")
        dirs[model] = directory
    return dirs


@app.command()
def embed(
    text: Annotated[str, typer.Argument(help="The text to embed; - reads it from standard input.")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model name (see `chroma-sparse-ef models`).")
    ] = DEFAULT_MODEL,
    query: Annotated[
        bool,
        typer.Option(
            "--query", help="Embed as a query (query model and target) instead of a document."
        ),
    ] = False,
    base_url: Annotated[
        str | None,
        typer.Option(
            envvar=BASE_URL_ENV_VAR,
            show_default=False,
            help="Embedding service URL. Default: Chroma's hosted service when "
            f"{DEFAULT_API_KEY_ENV_VAR} is set, else the local server.",
        ),
    ] = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local", help="Start the local server in-process and use it (BM25 vectors)."
        ),
    ] = False,
    top: Annotated[
        int | None,
        typer.Option(
            "--top", "-n", min=1, show_default=False, help="Show only the N heaviest entries."
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print JSON (indices ascending, as chromadb stores them)."),
    ] = False,
) -> None:
    """Print the sparse vector of TEXT with its labels (the tokens), heaviest first.

    The key comes from CHROMA_API_KEY. With no key and no URL (or with --local), the local server runs in-process: its vectors are BM25 weights, not SPLADE.
    """
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        fail("text must be a non-empty string")
    _check_sparse_model(model)
    if local and base_url is not None:
        fail(f"--local and --base-url (or {BASE_URL_ENV_VAR}) cannot be used together")
    use_local = local or (base_url is None and not os.environ.get(DEFAULT_API_KEY_ENV_VAR))
    with _service(base_url, use_local, explicit=local) as url:
        try:
            from ._embedding_function import ChromaSparseEmbeddingFunction

            with ChromaSparseEmbeddingFunction(model=model, base_url=url, fetch_labels=True) as ef:
                vector = (ef.embed_query if query else ef)([text])[0]
                used_model = ef.query_model if query else ef.model
                tokens = ef.usage.tokens
        except EmbeddingError as exc:
            fail(str(exc))
    side = "query" if query else "document"
    if as_json:
        payload = {
            "model": used_model,
            "side": side,
            "backend": "local BM25" if use_local else "service",
            "num_tokens": tokens,
            "indices": list(vector.indices),
            "values": list(vector.values),
            "labels": list(vector.labels) if vector.labels is not None else None,
        }
        typer.echo(json.dumps(payload, ensure_ascii=False))
        return
    _print_vector(vector, used_model, side, tokens, local=use_local, top=top)


def _check_sparse_model(model: str) -> None:
    """Fail, listing the sparse models once, unless `model` is one of them."""
    sparse = [info.name for info in MODELS.values() if info.sparse]
    if model not in MODELS:
        fail(f"unknown model {model!r}; sparse models: {', '.join(sparse)}")
    if not MODELS[model].sparse:
        fail(f"{model!r} is dense-only; sparse models: {', '.join(sparse)}")


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the models Chroma's embedding service hosts, and what each can do."""
    if as_json:
        rows = [
            {
                "name": info.name,
                "sparse": info.sparse,
                "query_model": info.query_model,
                "description": info.description,
            }
            for info in MODELS.values()
        ]
        typer.echo(json.dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title="Models of Chroma's embedding service",
        caption="* the default model",
    )
    table.add_column("model", no_wrap=True)
    table.add_column("sparse")
    table.add_column("notes")
    for info in MODELS.values():
        table.add_row(
            Text(info.name + (" *" if info.name == DEFAULT_MODEL else "")),
            "yes" if info.sparse else "no",
            info.description,
        )
    Console().print(table)


@contextlib.contextmanager
def _service(base_url: str | None, use_local: bool, *, explicit: bool) -> Iterator[str | None]:
    """Yield the base URL to call: `base_url`, or that of a local server started here."""
    if not use_local:
        yield base_url
        return
    why = "--local" if explicit else f"no {DEFAULT_API_KEY_ENV_VAR}"
    typer.echo(
        f"chroma-sparse-ef: {why}: using the local server (BM25 vectors, not SPLADE)", err=True
    )
    with contextlib.ExitStack() as stack:
        try:
            from .server import create_app, run_in_thread

            server = stack.enter_context(run_in_thread(create_app()))
        except (ImportError, ConfigurationError, RuntimeError) as exc:
            fail(f"cannot start the local server: {exc}")
        yield server.url


def _print_vector(
    vector: SparseVector, model: str, side: str, tokens: int, *, local: bool, top: int | None
) -> None:
    from rich.console import Console
    from rich.markup import escape

    labels = vector.labels or [""] * len(vector.indices)
    rows = sorted(
        zip(labels, vector.indices, vector.values, strict=True), key=lambda r: (-r[2], r[1])
    )
    shown = rows[:top] if top is not None else rows
    console = Console()
    if not rows:
        # An empty table reads as a failure; say what happened instead.
        console.print(
            f"[bold]{escape(model)}[/bold] ({side}): no matches: no token of the text "
            f"carries weight ({tokens} tokens read; stopwords, for one, carry none)"
        )
    else:
        _print_table(console, shown, len(rows))
    # Labels and model names are data, not markup: "[CLS]" must print as itself.
    console.print(f"[bold]{escape(model)}[/bold] ({side}): {len(rows)} non-zero, {tokens} tokens")
    if local:
        console.print("BM25 weights from the local server, not SPLADE", style="dim")


def _print_table(console: Any, shown: list[tuple[str, int, float]], total: int) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table()
    table.add_column("label")
    table.add_column("index", justify="right")
    table.add_column("value", justify="right")
    for label, index, value in shown:
        table.add_row(Text(label), str(index), f"{value:.4f}")
    console.print(table)
    if len(shown) < total:
        console.print(f"{total - len(shown)} lighter entries not shown", style="dim")


class SearchMode(str, enum.Enum):
    """Search modes of ``search``."""

    hybrid = "hybrid"
    dense = "dense"
    sparse = "sparse"


_PATH_HELP = "Folder of the demo's PersistentClient (embedded Chroma)."
#: With CHROMA_API_KEY, these make `demo` and `search` use Chroma Cloud (see _demo).
_CLOUD_ENV_VARS = ("CHROMA_TENANT", "CHROMA_DATABASE")
_LOCAL_HELP = "Use the local server and embedded Chroma even if CHROMA_API_KEY is set."


@app.command()
def demo(
    path: Annotated[Path, typer.Option(help=_PATH_HELP)] = Path("chroma-sparse-ef-demo"),
    limit: Annotated[
        int | None, typer.Option(min=1, help="Ingest at most this many documents (default: all).")
    ] = None,
    top: Annotated[int, typer.Option(min=1, max=50, help="Rows per leg.")] = 5,
    local: Annotated[bool, typer.Option("--local", help=_LOCAL_HELP)] = False,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Rebuild the collection from scratch.")
    ] = False,
) -> None:
    """Ingest the Python standard library's docstrings and compare dense, sparse and hybrid search.

    Offline by default: with no CHROMA_API_KEY the local server runs in-process (BM25 vectors, not SPLADE) and Chroma is embedded under --path. With CHROMA_API_KEY the hosted service computes SPLADE vectors; with CHROMA_TENANT and CHROMA_DATABASE too, the collection lives on Chroma Cloud.
    """
    from rich.console import Console

    from ._demo import demo as run_demo

    console = Console()
    with _one_line_errors():
        run_demo(console, path=path, limit=limit, top=top, local=local, fresh=fresh)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to search for.")],
    path: Annotated[Path, typer.Option(help=_PATH_HELP)] = Path("chroma-sparse-ef-demo"),
    collection: Annotated[str, typer.Option(help="Collection name.")] = "stdlib_docs",
    mode: Annotated[SearchMode, typer.Option(help="Which legs to rank with.")] = SearchMode.hybrid,
    top: Annotated[int, typer.Option(min=1, max=100, help="How many hits.")] = 10,
    local: Annotated[bool, typer.Option("--local", help=_LOCAL_HELP)] = False,
) -> None:
    """Hybrid (or dense, or sparse) search in the demo's collection, or the one named."""
    from rich.console import Console

    from ._demo import search as run_search

    if not query.strip():
        fail("query must be a non-empty string")
    if path.exists() and not path.is_dir() and not _uses_cloud(local):
        # Checked here: the demo's "no data, run demo first" advice would send the user
        # to `demo --path FILE`, which fails the same way.
        fail(f"--path {path} is a file; it must be the folder `chroma-sparse-ef demo` wrote")
    with _one_line_errors():
        run_search(
            Console(), query, path=path, name=collection, mode=mode.value, top=top, local=local
        )


def _uses_cloud(local: bool) -> bool:
    """Whether demo/search open Chroma Cloud (all three variables set, no --local)."""
    names = (DEFAULT_API_KEY_ENV_VAR, *_CLOUD_ENV_VARS)
    return not local and all(os.environ.get(name) for name in names)


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Turn the failures a user can act on into one line; anything else is a real bug."""
    from chromadb.errors import ChromaError

    try:
        yield
    except (EmbeddingError, ValueError, ChromaError) as exc:
        fail(explain(exc))
    except ImportError as exc:
        fail(f"{exc}; install the server extra: pip install 'chroma-sparse-ef[server]'")
    except KeyboardInterrupt:
        fail("interrupted")


def explain(exc: BaseException) -> str:
    """The one line `fail` prints for `exc`: its first line, and what to check on Cloud.

    chromadb says only "Could not connect to a Chroma server" (or to a tenant) when
    Chroma Cloud is out of reach or refuses the credentials; the user needs to know that
    the Cloud variables chose Cloud, and what to do about it.

    Args:
        exc: The error.

    Returns:
        One line, without secrets (the key's name is printed, never its value).
    """
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if _uses_cloud(local=False) and text.startswith("Could not connect"):
        names = ", ".join((DEFAULT_API_KEY_ENV_VAR, *_CLOUD_ENV_VARS))
        text = (
            f"Chroma Cloud did not answer ({text}): {names} are set, so the collection is "
            "opened on Chroma Cloud. Check the network and those three values (a wrong "
            "key, tenant or database reads the same), or pass --local to use the embedded "
            "copy under --path"
        )
    return text


def main() -> None:
    """Entry point of the ``chroma-sparse-ef`` console script."""
    app(prog_name="chroma-sparse-ef")


if __name__ == "__main__":
    main()
