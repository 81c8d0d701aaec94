"""The ``chroma-sparse-ef`` command.

One typer app; each command is a function registered on `app`, so more commands
(``demo``, ``embed``, ``search``) are added the same way. Heavy imports (FastAPI,
uvicorn, chromadb) happen inside the commands, so ``--help`` stays fast. Expected
failures print one line, ``chroma-sparse-ef: error: ...``, and exit with status 1.
"""

from __future__ import annotations

import enum
from typing import Annotated, NoReturn

import typer

from ._exceptions import ConfigurationError
from ._version import __version__
from .server._settings import API_KEY_ENV_VAR, DEFAULT_HOST, DEFAULT_PORT

__all__ = ["app", "main"]

app = typer.Typer(
    name="chroma-sparse-ef",
    help="Sparse embeddings from Chroma's embedding service, and hybrid search.",
    no_args_is_help=True,
    add_completion=False,
    # A failure is one line (see fail()), never a page of locals that could hold a key.
    pretty_exceptions_enable=False,
)


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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"chroma-sparse-ef {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Sparse embeddings from Chroma's embedding service, and hybrid search."""


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
) -> None:
    """Serve POST /embed_sparse locally (BM25 vectors), like Chroma's embedding service."""
    try:
        from .server import create_app, warn_if_exposed
        from .server._serve import (
            bind_socket,
            make_uvicorn_server,
            url_for,
            uvicorn_log_config,
        )
    except ImportError as exc:
        fail(str(exc))
    try:
        application = create_app(api_key=api_key, rate_limit=rate_limit, latency_ms=latency_ms)
        sock = bind_socket(host, port)
    except ConfigurationError as exc:
        fail(str(exc))
    with sock:
        # Building the uvicorn Config applies the log config, so warnings come after it.
        server = make_uvicorn_server(
            application,
            log_level=log_level.value,
            access_log=access_log,
            log_config=uvicorn_log_config(log_level.value),
        )
        warn_if_exposed(host, has_api_key=api_key is not None)
        typer.echo(f"chroma-sparse-ef: serving {url_for(sock)}/embed_sparse", err=True)
        server.run(sockets=[sock])


def main() -> None:
    """Entry point of the ``chroma-sparse-ef`` console script."""
    app(prog_name="chroma-sparse-ef")


if __name__ == "__main__":
    main()
