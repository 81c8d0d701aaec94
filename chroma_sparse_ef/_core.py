"""What the sync and async paths share: requests, responses, retry and split decisions.

No I/O happens here (openai-python's BaseClient split): `_Core.decide` turns one HTTP
response into the vectors, a wait before retrying, or a split; `_Core.decide_transport`
does the same for a request that got no response. The send loops in
`_embedding_function.py` only act on those decisions.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import httpx
from chromadb.base_types import SparseVector

from ._config import Settings, display_url
from ._constants import (
    EMBED_SPARSE_PATH,
    LOCAL_PLACEHOLDER_TOKEN,
    MAX_RETRY_AFTER,
    MODEL_HEADER,
    TOKEN_HEADER,
)
from ._exceptions import InvalidInputError, RateLimitError, ServiceError
from ._protocol import build_body, error_for_status, parse_response
from ._retry import backoff_delay, is_retryable_status, retry_after_from_headers
from ._usage import UsageMeter

__all__ = ["Core", "Done", "Request", "Retry", "Side", "Split", "check_input"]

logger = logging.getLogger("chroma_sparse_ef")

Side = Literal["documents", "query"]


@dataclass(frozen=True, slots=True)
class Request:
    """What one side (documents or queries) sends, apart from the texts."""

    model: str
    # Holds the API key: kept out of the repr, so tracebacks that show locals
    # (pytest --showlocals, Sentry) never print it.
    headers: Mapping[str, str] = field(repr=False)
    task: str | None
    target: str | None
    instructions: str | None

    def body(self, texts: Sequence[str], fetch_labels: bool) -> bytes:
        return build_body(
            texts,
            fetch_labels=fetch_labels,
            task=self.task,
            target=self.target,
            instructions=self.instructions,
        )


@dataclass(frozen=True, slots=True)
class Done:
    vectors: list[SparseVector]


@dataclass(frozen=True, slots=True)
class Retry:
    delay: float


class Split:
    """A 413 on more than one text: send each half on its own."""


_SPLIT = Split()


class Core:
    """The decisions shared by the sync and async paths. No I/O happens here."""

    def __init__(self, settings: Settings, api_key: str | None) -> None:
        self.settings = settings
        self.url = settings.resolved_base_url + EMBED_SPARSE_PATH
        self._api_key = api_key
        self.usage = UsageMeter()
        # Learned from 413s: later batches start no larger than what the service took.
        self.batch_cap = settings.batch_size
        self.random: Callable[[], float] = random.random
        self.clock: Callable[[], float] = time.time
        self.requests = {
            "documents": self._request_for("documents"),
            "query": self._request_for("query"),
        }

    def _request_for(self, side: Side) -> Request:
        s = self.settings
        model = s.model if side == "documents" else s.resolved_query_model
        headers = {
            MODEL_HEADER: model,
            TOKEN_HEADER: self._api_key or LOCAL_PLACEHOLDER_TOKEN,
            "content-type": "application/json",
        }
        instructions = s.instructions
        if side == "query" and s.query_instructions is not None:
            instructions = s.query_instructions
        if instructions is not None:
            return Request(model, headers, None, None, instructions)
        if s.task is not None:
            return Request(model, headers, s.task, side, None)
        return Request(model, headers, None, None, None)

    def batches(self, n: int) -> list[tuple[int, int]]:
        size = max(1, min(self.settings.batch_size, self.batch_cap))
        return [(start, min(start + size, n)) for start in range(0, n, size)]

    def decide(
        self,
        response: httpx.Response,
        texts: Sequence[str],
        request: Request,
        retries: int,
    ) -> Done | Retry | Split:
        """Turn one response into: the vectors, a wait before retrying, or a split."""
        status = response.status_code
        if 200 <= status < 300:
            vectors, tokens = parse_response(
                response.content,
                expected=len(texts),
                fetch_labels=self.settings.fetch_labels,
                model=request.model,
            )
            self.usage.succeeded(len(texts), tokens)
            return Done(vectors)
        if status == 413 and len(texts) > 1:
            logger.info(
                "413 for %d texts (model %s): splitting the batch in two", len(texts), request.model
            )
            return _SPLIT
        hint = retry_after_from_headers(response.headers, now=self.clock())
        error = error_for_status(
            status,
            response.content,
            model=request.model,
            api_key=self._api_key,
            api_key_env_var=self.settings.api_key_env_var,
            retry_after=hint,
        )
        if not is_retryable_status(status):
            raise error
        if hint is not None and hint > MAX_RETRY_AFTER:
            raise RateLimitError(
                f"{error.message}; that is longer than the {MAX_RETRY_AFTER:g} s this "
                "client waits, so it gives up now instead of sleeping",
                status_code=status,
                error=error.error,
                model=request.model,
                retry_after=hint,
            ) from error
        if retries >= self.settings.max_retries:
            raise error
        delay = hint if hint is not None else backoff_delay(retries, self.random)
        logger.info(
            "status %d for model %s; retry %d of %d in %.2f s",
            status,
            request.model,
            retries + 1,
            self.settings.max_retries,
            delay,
        )
        return Retry(delay)

    def accepted_after_split(self, size: int) -> None:
        """A 413'd batch went through once split into pieces of at most `size` texts.

        Only then is the cap lowered: when a split ends on a single text that is too large,
        the call fails and nothing is learned, so one oversized text cannot leave the
        instance sending one text per request.
        """
        self.batch_cap = min(self.batch_cap, size)

    def decide_transport(self, exc: httpx.HTTPError, request: Request, retries: int) -> Retry:
        """A request that got no response: retry it, or raise `ServiceError`."""
        where = display_url(self.url)
        if isinstance(exc, httpx.TimeoutException):
            what = f"timed out after {self.settings.timeout:g} s calling {where}"
        elif isinstance(exc, httpx.TransportError):
            what = f"could not reach {where} ({type(exc).__name__})"
        else:
            raise ServiceError(
                f"request to {where} failed: {type(exc).__name__}", model=request.model
            ) from exc
        if retries >= self.settings.max_retries:
            raise ServiceError(
                f"{what} (model {request.model!r}, {retries + 1} attempts)", model=request.model
            ) from exc
        delay = backoff_delay(retries, self.random)
        logger.info(
            "%s; retry %d of %d in %.2f s", what, retries + 1, self.settings.max_retries, delay
        )
        return Retry(delay)


def check_input(input: object) -> list[str]:
    """The texts as a list, or `InvalidInputError` before any request is sent."""
    if isinstance(input, str):
        raise InvalidInputError(
            "expected a list of texts, got a single string: wrap it in a list, e.g. [text]"
        )
    if input is None or isinstance(input, (bytes, bytearray, memoryview, Mapping)):
        raise InvalidInputError(f"expected a list of texts, got {type(input).__name__}")
    if not isinstance(input, Iterable):
        raise InvalidInputError(f"expected a list of texts, got {type(input).__name__}")
    texts = list(input)
    if not texts:
        raise InvalidInputError("expected at least one text, got an empty list")
    for pos, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(
                f"input[{pos}] is {type(text).__name__}, expected str"
                + (": decode bytes first" if isinstance(text, (bytes, bytearray)) else "")
            )
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidInputError(
                    f"input[{pos}] is not valid Unicode text: a lone surrogate at character "
                    f"{exc.start} (text decoded with errors='surrogateescape'?)"
                ) from exc
    return texts
