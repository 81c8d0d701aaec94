"""The FastAPI application: ``POST /embed_sparse`` as the spec describes it, and ``/healthz``.

Checks run in the order that costs least first: simulated latency, key (401), rate
limit (429), model header (400/501), body size (413) and the memory budget for bodies
(503), the body read within its deadline (408), the count of values in it (413, before
parsing), the body parsed (400/413), then the backend. The backend, and the parsing of
bodies over 64 KiB, run in worker threads, so neither large JSON nor BM25's CPU work
blocks the event loop that answers `/healthz`. Connection-level limits (head size and deadline, connection count,
keep-alive) are uvicorn's side: see `_serve`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
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
from ._limits import ServerLimits
from ._problems import HTTPProblem, error_response
from ._ratelimit import RateLimit, TokenBucketLimiter, retry_after_headers
from ._routing import BackendRouter, check_output
from ._security import ApiKey
from ._settings import BACKEND_HEADER
from ._wire import (
    EmbedRequestBody,
    ErrorResponse,
    RequestLimits,
    SparseEmbedResponse,
    parse_embed_request,
    render_embed_response,
)

__all__ = ["create_app"]

#: Bodies up to this size are parsed on the event loop: 64 KiB of JSON parses in about
#: 0.1 ms, less than handing it to a worker thread and back costs; larger ones (up to
#: 16 MiB, tens of ms) go to a thread so `/healthz` never waits on them.
_INLINE_PARSE_BYTES = 64 * 1024
#: Seconds a client is asked to wait when the body budget is full: bodies are read in
#: well under a second on loopback, so a slot is free again by then.
_BUSY_RETRY_AFTER_S = 1.0

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


class _BodyBudget:
    """Bytes of request bodies held at once, across requests.

    Only touched from the event loop (never from worker threads), so plain integers
    need no lock.
    """

    __slots__ = ("held", "most")

    def __init__(self, most: int) -> None:
        self.most = most
        self.held = 0

    def take(self, size: int) -> bool:
        """Reserve `size` more bytes; False (nothing reserved) if that would pass the cap."""
        if self.held + size > self.most:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


@dataclass(frozen=True, slots=True)
class _Server:
    """Everything a request needs, fixed when the app is built."""

    router: BackendRouter
    api_key: ApiKey | None
    limiter: TokenBucketLimiter | None
    latency_s: float
    limits: ServerLimits
    request_limits: RequestLimits
    budget: _BodyBudget
    # Created on first use: anyio ties a limiter to the running event loop's backend.
    parse_slots: list[anyio.CapacityLimiter]


def create_app(
    *,
    api_key: str | None = None,
    backends: Sequence[SparseBackend] | None = None,
    rate_limit: RateLimit | str | None = None,
    latency_ms: float = 0.0,
    limits: ServerLimits | None = None,
    max_body_bytes: int | None = None,
    max_text_chars: int | None = None,
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
        limits: Every limit (`ServerLimits`; its defaults otherwise). The
            connection-level ones take effect when the app is run with
            `chroma_sparse_ef.server.run_in_thread` or `serve`, which read them from
            ``app.state.limits``; all are reported by `/healthz`.
        max_body_bytes: Shorthand for the same field of `limits`: largest request body;
            larger gives 413 without reading it all.
        max_text_chars: Shorthand for the same field of `limits`: longest text, in
            characters; longer gives 413.

    Returns:
        The FastAPI application, ready for uvicorn or `httpx.ASGITransport`.

    Raises:
        ConfigurationError: If an option is invalid (empty key, bad rate, negative
            latency or limits, a backend claiming an unknown or dense-only model).
    """
    if not (latency_ms >= 0 and math.isfinite(latency_ms)):
        raise ConfigurationError(f"latency_ms must be a non-negative number, got {latency_ms}")
    limits = limits if limits is not None else ServerLimits()
    if max_body_bytes is not None:
        # Raising the body cap alone raises the memory budget with it, so that a
        # single body of the new size can still be read.
        limits = limits.replace(
            max_body_bytes=max_body_bytes,
            max_buffered_bytes=max(limits.max_buffered_bytes, max_body_bytes),
        )
    if max_text_chars is not None:
        limits = limits.replace(max_text_chars=max_text_chars)
    if api_key is not None and not api_key:
        raise ConfigurationError("api_key must not be empty (pass None for no key)")
    limit = RateLimit.parse(rate_limit) if isinstance(rate_limit, str) else rate_limit
    server = _Server(
        router=BackendRouter(list(backends) if backends is not None else [Bm25Backend()]),
        api_key=ApiKey(api_key) if api_key is not None else None,
        limiter=TokenBucketLimiter(limit) if limit is not None else None,
        latency_s=latency_ms / 1000.0,
        limits=limits,
        request_limits=RequestLimits(
            max_texts=MAX_BATCH_SIZE, max_text_chars=limits.max_text_chars
        ),
        budget=_BodyBudget(limits.max_buffered_bytes),
        parse_slots=[],
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
    app.state.limits = limits
    app.state.requires_key = api_key is not None
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
    body = await _read_and_parse(server, request)
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


async def _read_and_parse(server: _Server, request: Request) -> EmbedRequestBody:
    """Read the body within the limits, then parse it in a worker thread.

    The bytes stay reserved in the shared budget until parsing is done, as that is how
    long the body (and what is built from it) is held.
    """
    limits = server.limits
    declared_text = request.headers.get("content-length")
    declared = int(declared_text) if declared_text and declared_text.isdigit() else None
    if declared is not None and declared > limits.max_body_bytes:
        raise HTTPProblem(
            413, f"request body too large: {declared} bytes, at most {limits.max_body_bytes}"
        )
    held = 0
    try:
        # A declared length is reserved before reading, so a body that cannot fit is
        # refused without reading any of it; a chunked one reserves as it arrives.
        if declared is not None:
            _reserve(server.budget, declared)
            held = declared
        with anyio.fail_after(limits.body_timeout_s):
            chunks: list[bytes] = []
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise HTTPProblem(
                        413, f"request body too large: over {limits.max_body_bytes} bytes"
                    )
                if size > held:
                    _reserve(server.budget, size - held)
                    held = size
                chunks.append(chunk)
        raw = b"".join(chunks)
        del chunks
        if len(raw) <= _INLINE_PARSE_BYTES:
            return parse_embed_request(raw, server.request_limits)
        if not server.parse_slots:
            server.parse_slots.append(anyio.CapacityLimiter(limits.max_parallel_parses))
        return await anyio.to_thread.run_sync(
            parse_embed_request, raw, server.request_limits, limiter=server.parse_slots[0]
        )
    except TimeoutError:
        raise HTTPProblem(
            408, f"request body not received within {limits.body_timeout_s:g} s"
        ) from None
    finally:
        server.budget.give_back(held)


def _reserve(budget: _BodyBudget, size: int) -> None:
    """Take `size` bytes of the body budget, or refuse the request with 503."""
    if not budget.take(size):
        raise HTTPProblem(
            503,
            "too many request bodies in flight; retry shortly",
            headers=retry_after_headers(_BUSY_RETRY_AFTER_S),
        )


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
        "limits": server.limits.as_dict(),
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
