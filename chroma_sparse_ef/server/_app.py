"""The FastAPI application: ``POST /embed_sparse`` as the spec describes it, and ``/healthz``.

Checks run in the order that costs least first: simulated latency, key (401), rate
limit (429), model header (400/501), body size (413), body (400/413), then the backend
in a worker thread, so BM25's CPU work never blocks the event loop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .._constants import EMBED_SPARSE_PATH, MAX_BATCH_SIZE, MODEL_HEADER, TOKEN_HEADER
from .._exceptions import ConfigurationError
from .._models import MODELS
from .._version import __version__
from ._backends import Bm25Backend, SparseBackend
from ._problems import HTTPProblem, error_response
from ._ratelimit import RateLimit, TokenBucketLimiter, retry_after_headers
from ._routing import BackendRouter, check_output
from ._security import ApiKey
from ._settings import BACKEND_HEADER, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_TEXT_CHARS
from ._wire import (
    EmbedRequestBody,
    ErrorResponse,
    RequestLimits,
    SparseEmbedResponse,
    parse_embed_request,
    render_embed_response,
)

__all__ = ["create_app"]

logger = logging.getLogger("chroma_sparse_ef.server")

# The operation's documentation, word for word from spec/embed_sparse.openapi.yaml: the
# app's /openapi.json must describe the same contract (tests/unit/test_server_openapi.py).
_SUMMARY = "Generate sparse embeddings"
_DESCRIPTION = (
    "Generate sparse vector embeddings for the given texts using the specified model. "
    "Provide either 'instructions' or both 'task' and 'target' alongside 'texts'. "
    "Set 'fetch_labels' to true to include token labels in the response."
)
_OPERATION_ID = "embed_sparse_embed_sparse_post"
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Invalid request (missing headers, unsupported model, or malformed body)"),
        (401, "Authentication failed (invalid or missing API key)"),
        (413, "Too many texts in one request"),
        (429, "Rate limit exceeded"),
        (501, "Operation not supported for this model"),
    )
}


def _openapi_extra() -> dict[str, Any]:
    # Headers and body are read by hand (a missing token must be 401, not a validation
    # error), so FastAPI cannot infer them: they are declared here instead.
    return {
        "parameters": [
            {
                "name": TOKEN_HEADER,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "Chroma API key for authentication.",
            },
            {
                "name": MODEL_HEADER,
                "in": "header",
                "required": True,
                "schema": {"type": "string", "enum": list(MODELS)},
                "description": "The embedding model to use.",
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EmbedRequestBody.model_json_schema()}},
        },
    }


@dataclass(frozen=True, slots=True)
class _Server:
    """Everything a request needs, fixed when the app is built."""

    router: BackendRouter
    api_key: ApiKey | None
    limiter: TokenBucketLimiter | None
    latency_s: float
    max_body_bytes: int
    limits: RequestLimits


def create_app(
    *,
    api_key: str | None = None,
    backends: Sequence[SparseBackend] | None = None,
    rate_limit: RateLimit | str | None = None,
    latency_ms: float = 0.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> FastAPI:
    """Build the local ``/embed_sparse`` server.

    Args:
        api_key: If set, clients must send it in `x-chroma-token` (else 401). If not,
            any token is accepted, but the header must still be present, as the spec
            requires it. Kept only as a digest, never logged.
        backends: Backends in order of preference; default ``[Bm25Backend()]``, which
            serves every sparse model in the catalog.
        rate_limit: Requests per token, e.g. ``"10/s"`` or ``RateLimit(600, 60)``; above
            it the server answers 429 with Retry-After and retry-after-ms. None: no limit.
        latency_ms: Delay added to every ``/embed_sparse`` request (awaited, so requests
            still overlap), to imitate a remote service in benchmarks.
        max_body_bytes: Largest request body; larger gives 413 without reading it all.
        max_text_chars: Longest text, in characters; longer gives 413.

    Returns:
        The FastAPI application, ready for uvicorn or `httpx.ASGITransport`.

    Raises:
        ConfigurationError: If an option is invalid (empty key, bad rate, negative
            latency or limits, a backend claiming an unknown or dense-only model).
    """
    if not (latency_ms >= 0 and math.isfinite(latency_ms)):
        raise ConfigurationError(f"latency_ms must be a non-negative number, got {latency_ms}")
    if max_body_bytes < 1 or max_text_chars < 1:
        raise ConfigurationError("max_body_bytes and max_text_chars must be positive")
    if api_key is not None and not api_key:
        raise ConfigurationError("api_key must not be empty (pass None for no key)")
    limit = RateLimit.parse(rate_limit) if isinstance(rate_limit, str) else rate_limit
    server = _Server(
        router=BackendRouter(list(backends) if backends is not None else [Bm25Backend()]),
        api_key=ApiKey(api_key) if api_key is not None else None,
        limiter=TokenBucketLimiter(limit) if limit is not None else None,
        latency_s=latency_ms / 1000.0,
        max_body_bytes=max_body_bytes,
        limits=RequestLimits(max_texts=MAX_BATCH_SIZE, max_text_chars=max_text_chars),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        _log_startup(server)
        yield

    app = FastAPI(
        title="chroma-sparse-ef local server",
        version=__version__,
        description="Chroma's POST /embed_sparse for offline development and tests.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)

    @app.post(
        EMBED_SPARSE_PATH,
        summary=_SUMMARY,
        description=_DESCRIPTION,
        operation_id=_OPERATION_ID,
        response_model=SparseEmbedResponse,
        responses=_ERROR_RESPONSES,
        openapi_extra=_openapi_extra(),
    )
    async def embed_sparse(request: Request) -> Response:
        return await _embed_sparse(server, request)

    @app.get("/healthz", summary="Health, backends, and which backend serves which model")
    async def healthz() -> dict[str, Any]:
        return _health(server)

    return app


async def _embed_sparse(server: _Server, request: Request) -> Response:
    if server.latency_s:
        await anyio.sleep(server.latency_s)
    token = request.headers.get(TOKEN_HEADER)
    if token is None:
        raise HTTPProblem(401, f"missing {TOKEN_HEADER} header")
    if server.api_key is not None and not server.api_key.matches(token):
        raise HTTPProblem(401, f"invalid API key in {TOKEN_HEADER}")
    if server.limiter is not None:
        wait = server.limiter.acquire(token)
        if wait > 0:
            raise HTTPProblem(
                429,
                f"rate limit exceeded ({server.limiter.limit} per token); retry in {wait:.3f} s",
                headers=retry_after_headers(wait),
            )
    model = request.headers.get(MODEL_HEADER)
    backend = server.router.resolve(model)
    assert model is not None  # resolve() refuses a missing header
    raw = await _read_body(request, server.max_body_bytes)
    body = parse_embed_request(raw, server.limits)
    fetch_labels = bool(body.fetch_labels)
    if body.texts:
        output = await run_in_threadpool(
            backend.embed,
            body.texts,
            model=model,
            task=body.task,
            target=body.target,
            instructions=body.instructions,
            fetch_labels=fetch_labels,
        )
        items, num_tokens = check_output(output, len(body.texts), backend)
    else:
        items, num_tokens = [], 0
    return Response(
        render_embed_response(items, num_tokens, fetch_labels),
        media_type="application/json",
        headers={BACKEND_HEADER: backend.name},
    )


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """Read the body, refusing with 413 as soon as it is known to be too large."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPProblem(413, f"request body too large: {declared} bytes, at most {max_bytes}")
    # Content-Length can be absent (chunked) or wrong, so the count is kept while reading.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPProblem(413, f"request body too large: over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _health(server: _Server) -> dict[str, Any]:
    return {
        "status": "ok",
        "version": __version__,
        "backends": [
            {"name": b.name, "description": b.description, "models": list(b.models)}
            for b in server.router.backends
        ],
        "models": server.router.routes(),
        "auth": server.api_key is not None,
        "rate_limit": str(server.limiter.limit) if server.limiter is not None else None,
        "latency_ms": server.latency_s * 1000.0,
    }


def _log_startup(server: _Server) -> None:
    for backend in server.router.backends:
        logger.info(
            "backend %r serves %s: %s", backend.name, ", ".join(backend.models), backend.description
        )
    unserved = [m for m, b in server.router.routes().items() if b is None]
    if unserved:
        logger.info("answering 501 for %s", ", ".join(unserved))
    logger.info(
        "auth: %s; rate limit: %s; added latency: %g ms",
        "API key required" if server.api_key is not None else "any x-chroma-token accepted",
        server.limiter.limit if server.limiter is not None else "none",
        server.latency_s * 1000.0,
    )


def _install_error_handlers(app: FastAPI) -> None:
    """Make every error, including the framework's own, an ``{"error": ...}`` body."""

    async def on_problem(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPProblem)
        return exc.to_response()

    async def on_http_exception(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    async def on_validation_error(_: Request, exc: Exception) -> Response:
        # FastAPI's default is a 422 with a `detail` list; the spec's shape is a 400.
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(part) for part in first.get("loc", ()))
        return error_response(400, f"invalid request: {loc}: {first.get('msg', 'invalid')}")

    async def on_unexpected(_: Request, exc: Exception) -> Response:
        # Logged by Starlette's ServerErrorMiddleware; the client gets no internals.
        return error_response(500, "internal server error")

    app.add_exception_handler(HTTPProblem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)
