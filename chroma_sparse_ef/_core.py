"""What the sync and async paths share: requests, responses, retry and split decisions.

No I/O happens here (openai-python's BaseClient split): `Core.decide` turns one reply
(status, headers, a capped body) into the vectors, a wait before retrying, or a split;
`Core.decide_transport` does the same for a request that got no response. Both feed the
instance's `Throttle` (what 429s taught about the service's rate). The send loops in
`_embedding_function.py` only act on those decisions.

Errors are raised here, from plain data, never inside an `except` block that holds an
httpx exception: httpx's frames hold the request headers, hence the API key (issue 9).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from chromadb.base_types import SparseVector

from ._config import Settings, display_url
from ._constants import (
    EMBED_SPARSE_PATH,
    LOCAL_PLACEHOLDER_TOKEN,
    MAX_ERROR_BODY_BYTES,
    MAX_RETRY_AFTER,
    MODEL_HEADER,
    RESPONSE_BYTES_BASE,
    RESPONSE_BYTES_PER_TEXT,
    TOKEN_HEADER,
)
from ._exceptions import (
    APIConnectionError,
    APITimeoutError,
    InvalidResponseError,
    MissingAPIKeyError,
    RateLimitError,
)
from ._protocol import build_body, error_for_status, parse_response, scrub
from ._retry import backoff_delay, is_retryable_status, retry_after_from_headers
from ._throttle import Throttle
from ._transport import ACCEPT_ENCODING, Failure, Reply, SecretHeaders
from ._usage import UsageMeter

__all__ = ["Core", "Done", "Request", "Retry", "Side", "Split"]

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
    #: The wait comes from a 429 (counted in `Usage.throttled_seconds`).
    throttled: bool = False


class Split:
    """A 413 on more than one text: send each half on its own."""


_SPLIT = Split()


class Core:
    """The decisions shared by the sync and async paths. No I/O happens here."""

    def __init__(
        self,
        settings: Settings,
        api_key: str | None,
        *,
        base_url: str,
        refusal: str | None = None,
    ) -> None:
        self.settings = settings
        # The URL fixed when the function was built (`CHROMA_EMBED_URL` read once there).
        self.url = base_url + EMBED_SPARSE_PATH
        self._api_key = api_key
        self._refusal = refusal
        self.usage = UsageMeter()
        # Learned from 413s: later batches start no larger than what the service took.
        self.batch_cap = settings.batch_size
        self.random: Callable[[], float] = random.random
        #: Wall-clock time, for HTTP-date Retry-After hints.
        self.clock: Callable[[], float] = time.time
        #: Monotonic time, for the throttle's pauses and pacing.
        self.monotonic: Callable[[], float] = time.monotonic
        self.throttle = Throttle()
        self.requests = {
            "documents": self._request_for("documents"),
            "query": self._request_for("query"),
        }

    def _request_for(self, side: Side) -> Request:
        s = self.settings
        model = s.model if side == "documents" else s.resolved_query_model
        headers = SecretHeaders(
            {
                MODEL_HEADER: model,
                TOKEN_HEADER: self._api_key or LOCAL_PLACEHOLDER_TOKEN,
                "content-type": "application/json",
                "accept-encoding": ACCEPT_ENCODING,
            }
        )
        instructions = s.instructions
        if side == "query" and s.query_instructions is not None:
            instructions = s.query_instructions
        if instructions is not None:
            return Request(model, headers, None, None, instructions)
        if s.task is not None:
            return Request(model, headers, s.task, side, None)
        return Request(model, headers, None, None, None)

    def check_key_allowed(self) -> None:
        """Refuse, before any request, to call a stored-config URL the key may not go to."""
        if self._refusal is not None:
            raise MissingAPIKeyError(self._refusal)

    def batches(self, n: int) -> list[tuple[int, int]]:
        size = max(1, min(self.settings.batch_size, self.batch_cap))
        return [(start, min(start + size, n)) for start in range(0, n, size)]

    def body_limit(self, status: int, texts: int) -> int:
        """Bytes of a response body worth reading: the cap for `texts` vectors, or an
        error body's quotable start."""
        if 200 <= status < 300:
            return RESPONSE_BYTES_BASE + texts * RESPONSE_BYTES_PER_TEXT
        return MAX_ERROR_BODY_BYTES

    def decide(
        self,
        reply: Reply,
        texts: Sequence[str],
        request: Request,
        retries: int,
        sent_at: float,
    ) -> Done | Retry | Split:
        """Turn one reply into: the vectors, a wait before retrying, or a split.

        Args:
            reply: Status, headers and the body as read (capped).
            texts: The texts the request carried.
            request: What the side sends (model, headers).
            retries: Retries this request already had.
            sent_at: When it was sent (`monotonic`), so a burst of 429s lowers the
                throttle's rate once.
        """
        status = reply.status
        if 200 <= status < 300:
            if reply.over_limit:
                limit = self.body_limit(status, len(texts))
                raise InvalidResponseError(
                    f"the response for {len(texts)} text(s) (model {request.model!r}) is "
                    f"larger than {limit:,} bytes, far above any real answer; reading "
                    "stopped there",
                    status_code=status,
                    model=request.model,
                )
            vectors, tokens = parse_response(
                reply.content,
                expected=len(texts),
                fetch_labels=self.settings.fetch_labels,
                model=request.model,
            )
            self.usage.succeeded(len(texts), tokens)
            self.throttle.succeeded(self.monotonic())
            return Done(vectors)
        if status == 413 and len(texts) > 1:
            logger.info(
                "413 for %d texts (model %s): splitting the batch in two", len(texts), request.model
            )
            return _SPLIT
        hint = retry_after_from_headers(reply.headers, now=self.clock())
        error = error_for_status(
            status,
            reply.content,
            model=request.model,
            api_key=self._api_key,
            api_key_env_var=self.settings.api_key_env_var,
            retry_after=hint,
            request_id=reply.headers.get("x-request-id"),
        )
        if not is_retryable_status(status):
            raise error
        if status == 429:
            self.usage.rate_limited()
        if hint is not None and hint > MAX_RETRY_AFTER:
            raise RateLimitError(
                f"{error.message}; that is longer than the {MAX_RETRY_AFTER:g} s this "
                "client waits, so it gives up now instead of sleeping",
                status_code=status,
                error=error.error,
                model=request.model,
                request_id=error.request_id,
                retry_after=hint,
            ) from error
        delay = hint if hint is not None else backoff_delay(retries, self.random)
        if status == 429:
            # Every request of the instance waits, and the pace slows, even when this
            # one has no retry left: the next call starts from what was learned.
            self.throttle.throttled(sent_at, self.monotonic(), delay)
        if retries >= self.settings.max_retries:
            raise error
        logger.info(
            "status %d for model %s; retry %d of %d in %.2f s",
            status,
            request.model,
            retries + 1,
            self.settings.max_retries,
            delay,
        )
        return Retry(delay, throttled=status == 429)

    def accepted_after_split(self, size: int) -> None:
        """A 413'd batch went through once split into pieces of at most `size` texts.

        Only then is the cap lowered: when a split ends on a single text that is too large,
        the call fails and nothing is learned, so one oversized text cannot leave the
        instance sending one text per request.
        """
        self.batch_cap = min(self.batch_cap, size)

    def decide_transport(self, failure: Failure, request: Request, retries: int) -> Retry:
        """A request that got no complete response: retry it, or raise `APIConnectionError`
        (`APITimeoutError` when it ran out of time)."""
        where = display_url(self.url)
        if failure.timeout:
            what = f"timed out after {self.settings.timeout:g} s calling {where}"
        else:
            what = f"could not reach {where}"
        # The exception's text (no headers in it) goes in the message; the exception
        # itself is not chained: its frames hold the request headers, hence the key.
        detail = scrub(failure.what, self._api_key)
        if failure.fatal:
            raise APIConnectionError(
                f"the request to {where} failed and cannot succeed on retry "
                f"(model {request.model!r}): {detail}",
                model=request.model,
            )
        if retries >= self.settings.max_retries:
            error = APITimeoutError if failure.timeout else APIConnectionError
            raise error(
                f"{what} (model {request.model!r}, {retries + 1} attempts; last: {detail})",
                model=request.model,
            )
        delay = backoff_delay(retries, self.random)
        logger.info(
            "%s (%s); retry %d of %d in %.2f s",
            what,
            detail,
            retries + 1,
            self.settings.max_retries,
            delay,
        )
        return Retry(delay)
