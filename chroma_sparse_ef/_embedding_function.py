"""`ChromaSparseEmbeddingFunction`: Chroma's hosted sparse models as a chromadb function.

Everything that is not I/O (request bodies, response validation, retry and split
decisions, the throttle shared by all requests of the instance, usage) is decided once in
`Core`; one attempt (deadline, capped streaming read) is `_transport.attempt`. The sync
path (a thread pool over one `httpx.Client`) and the async path (a semaphore over one
`httpx.AsyncClient`) repeat only their send loops: wait for the throttle, attempt, act on
the decision.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any

import httpx
from chromadb.api.types import Documents, SparseEmbeddingFunction, SparseVectors
from chromadb.base_types import SparseVector
from chromadb.utils.embedding_functions import register_sparse_embedding_function

from ._config import (
    IMMUTABLE_KEYS,
    Secret,
    Settings,
    check_header_value,
    display_url,
    plan_api_key,
    split_timeout,
    trust_base_url,
    validate_config,
)
from ._constants import (
    BASE_URL_ENV_VAR,
    DEFAULT_API_KEY_ENV_VAR,
    DEFAULT_BASE_URL,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    EMBEDDING_FUNCTION_NAME,
)
from ._core import Core, Done, Request, Retry, Side, Split
from ._exceptions import (
    ConfigurationError,
    ServiceError,
)
from ._inputs import check_input
from ._models import DEFAULT_MODEL
from ._progress import progress_bar
from ._transport import (
    Failure,
    async_client,
    attempt,
    attempt_async,
    bound_by_deadline,
    sync_client,
)
from ._usage import Usage

__all__ = ["ChromaSparseEmbeddingFunction"]


@register_sparse_embedding_function
class ChromaSparseEmbeddingFunction(SparseEmbeddingFunction[Documents]):
    """Sparse embeddings from Chroma's embedding service (`POST /embed_sparse`).

    Registered with chromadb under the name ``"chroma_sparse_ef"``, so a collection whose
    schema stores it rebuilds it by name (import this package first). One instance is
    safe to share across threads. Calls are batched (at most `batch_size` texts a
    request), sent up to `max_concurrency` at a time, retried on transient failures, and
    reassembled in input order; a 413 splits the batch.

    Args:
        model: The model for documents. Default ``"prithivida/Splade_PP_en_v1"``.
            Dense-only models raise `DenseOnlyModelError` (an `UnsupportedModelError`)
            here, before any request.
        api_key: The key. Never persisted; when omitted it is read from
            `api_key_env_var`, then from an existing chromadb CloudClient. A loopback
            `base_url` (the local server) needs no key.
        api_key_env_var: Where to find the key. Default ``"CHROMA_API_KEY"``.
        base_url: The service. Default: env ``CHROMA_EMBED_URL``, else
            ``"https://embed.trychroma.com"``.
        task: A task name; documents are then sent with ``target: "documents"`` and
            queries with ``target: "query"``.
        instructions: Instructions sent with every request (instead of a task).
        query_instructions: Instructions for queries, when they differ.
        query_model: The model for queries. Default: the catalog's twin (the
            efficient-SPLADE ``-doc`` model uses its ``-query`` model), else `model`.
        fetch_labels: Ask for token labels and return them in `SparseVector.labels`.
        batch_size: Texts per request. Default 100, the hosted service's cap.
        max_concurrency: Requests in flight per call. Default 16.
        max_retries: Retries after the first attempt. Default 2.
        timeout: Seconds one attempt may take, from connect to the last byte read,
            whatever the server does. Default 60, with a 5 s connect timeout. An
            `httpx.Timeout` sets each phase; the attempt is then bounded by the largest.
            A call takes at worst (1 + max_retries) x timeout plus the waits between
            attempts (README, "Security").
        progress: Show a progress bar (tqdm) for calls of more than one batch.
        http_client: An `httpx.Client` to send with (tests, proxies). Not closed by
            `close()`. Its connection pools are made to honour the attempt deadline
            during this function's requests; its other requests are unaffected.
        async_http_client: An `httpx.AsyncClient` for the async methods. Not closed by
            `aclose()`.

    Raises:
        ConfigurationError: a bad argument.
        MissingAPIKeyError: no key found and `base_url` is not a loopback address.
        DenseOnlyModelError: a dense-only model (a `ConfigurationError` and an
            `UnsupportedModelError`).
    """

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        api_key: str | None = None,
        api_key_env_var: str = DEFAULT_API_KEY_ENV_VAR,
        base_url: str | None = None,
        task: str | None = None,
        instructions: str | None = None,
        query_instructions: str | None = None,
        query_model: str | None = None,
        fetch_labels: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        progress: bool = False,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
    ) -> None:
        # Held in a Secret from here on, so no frame of a failing constructor (a bad
        # setting below) shows the key to a locals-showing traceback.
        key = Secret(api_key)
        del api_key
        if key.value is not None and not isinstance(key.value, str):
            raise ConfigurationError(f"api_key must be a string, got {type(key.value).__name__}")
        seconds, phases = split_timeout(timeout)
        settings = Settings(
            model=model,
            query_model=query_model,
            api_key_env_var=api_key_env_var,
            base_url=base_url,
            task=task,
            instructions=instructions,
            query_instructions=query_instructions,
            fetch_labels=fetch_labels,
            batch_size=batch_size,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            timeout=seconds,
        )
        self._setup(
            settings,
            api_key=key,
            phases=phases,
            progress=progress,
            http_client=http_client,
            async_http_client=async_http_client,
            from_config=False,
        )
        if base_url is not None:
            trust_base_url(self._base_url)

    def _setup(
        self,
        settings: Settings,
        *,
        api_key: Secret,
        phases: httpx.Timeout,
        progress: bool,
        http_client: httpx.Client | None,
        async_http_client: httpx.AsyncClient | None,
        from_config: bool,
    ) -> None:
        env_url = os.environ.get(BASE_URL_ENV_VAR)
        # Read once: requests, `base_url` and the key rule all use this value.
        self._base_url = (settings.base_url or env_url or DEFAULT_BASE_URL).rstrip("/")
        plan = plan_api_key(
            api_key.value,
            settings.api_key_env_var,
            self._base_url,
            from_config=from_config,
            env_base_url=env_url,
        )
        if plan.key is not None:
            check_header_value("api_key", plan.key, show=False)
        self._settings = settings
        self._timeout = phases
        self._core = Core(settings, plan.key, base_url=self._base_url, refusal=plan.refusal)
        self.progress = bool(progress)
        self._lock = threading.Lock()
        if http_client is not None:
            bound_by_deadline(http_client)
        self._client = http_client
        self._owns_client = http_client is None
        self._aclient = async_http_client
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        # Injected by tests so retries are checked without sleeping; None waits for real,
        # on the call's stop event (`_pause`).
        self._sleep: Callable[[float], None] | None = None
        self._async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    # -- chromadb's SparseEmbeddingFunction protocol ------------------------------------

    def __call__(self, input: Documents) -> SparseVectors:
        """Embed documents with `model`.

        Args:
            input: A non-empty list of strings.

        Returns:
            One `SparseVector` per text, in input order.

        Raises:
            InvalidInputError: `input` is not a non-empty list of strings.
            EmbeddingError: a subclass per failure; see the package's error table.
        """
        texts = check_input(input)
        self._core.check_key_allowed()
        return self._embed(texts, "documents")

    def embed_query(self, input: Documents) -> SparseVectors:
        """Embed queries with the query model (and query target or instructions).

        Same arguments, result and errors as `__call__`.
        """
        texts = check_input(input)
        self._core.check_key_allowed()
        return self._embed(texts, "query")

    async def acall(self, input: Documents) -> SparseVectors:
        """Awaitable `__call__`: same semantics, requests sent concurrently on the loop."""
        texts = check_input(input)
        self._core.check_key_allowed()
        return await self._aembed(texts, "documents")

    async def aembed_query(self, input: Documents) -> SparseVectors:
        """Awaitable `embed_query`."""
        texts = check_input(input)
        self._core.check_key_allowed()
        return await self._aembed(texts, "query")

    @staticmethod
    def name() -> str:
        """The registered name, ``"chroma_sparse_ef"``, persisted in collections."""
        return EMBEDDING_FUNCTION_NAME

    def get_config(self) -> dict[str, Any]:
        """The persisted configuration. Never holds the API key."""
        return self._settings.to_config()

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> ChromaSparseEmbeddingFunction:
        """Rebuild from `get_config()` output; the key is looked up again.

        Raises:
            ConfigurationError: the config does not match the packaged JSON schema.
            MissingAPIKeyError: the key cannot be found. A config whose `base_url` is
                not trusted with a key found in the environment builds without error;
                its first call raises `MissingAPIKeyError` instead.
        """
        settings = Settings.from_config(config)
        # The URL in a stored config was not chosen by this program: a key it did not
        # pass goes there only if the URL is one it trusts (README, "Security").
        ef = ChromaSparseEmbeddingFunction.__new__(ChromaSparseEmbeddingFunction)
        ef._setup(
            settings,
            api_key=Secret(None),
            phases=split_timeout(settings.timeout)[1],
            progress=False,
            http_client=None,
            async_http_client=None,
            from_config=True,
        )
        return ef

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        """Validate a config against the JSON schema shipped in the package.

        Raises:
            ConfigurationError: it does not match, or it holds an ``api_key``.
        """
        validate_config(config)

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        """Refuse changes that would move new vectors into another space.

        Raises:
            ConfigurationError: `new_config` changes the model, query model, task or
                instructions.
        """
        # chromadb passes two full configs; a partial update (only the changed keys) is
        # accepted too. In a full config (it has every key get_config always writes) a
        # missing key means "unset", so adding or removing a task or instructions counts.
        full = new_config.keys() >= _ALWAYS_IN_CONFIG
        for key in IMMUTABLE_KEYS:
            if key not in new_config and not full:
                continue
            before, after = old_config.get(key), new_config.get(key)
            if key == "query_model":
                before, after = _query_model_of(old_config), _query_model_of(new_config)
            if before != after:
                raise ConfigurationError(
                    f"changing {key!r} of {EMBEDDING_FUNCTION_NAME} ({before!r} -> {after!r}) "
                    "is not supported: vectors already stored would no longer be comparable; "
                    "create a new collection"
                )

    # -- what users read --------------------------------------------------------------

    @property
    def model(self) -> str:
        """The model documents are embedded with."""
        return self._settings.model

    @property
    def query_model(self) -> str:
        """The model queries are embedded with."""
        return self._settings.resolved_query_model

    @property
    def base_url(self) -> str:
        """The service's base URL (without credentials, if it had any), fixed at construction."""
        return display_url(self._base_url)

    @property
    def fetch_labels(self) -> bool:
        """Whether vectors carry token labels."""
        return self._settings.fetch_labels

    @property
    def settings(self) -> Settings:
        """Every setting that decides what is sent (no secret)."""
        return self._settings

    @property
    def usage(self) -> Usage:
        """Requests, texts, tokens and retries so far (a consistent snapshot)."""
        return self._core.usage.snapshot()

    def reset_usage(self) -> Usage:
        """Return the usage so far and start counting from zero."""
        return self._core.usage.reset()

    def __repr__(self) -> str:
        if not hasattr(self, "_settings"):
            # A constructor that raised: tracebacks that show locals repr `self` too.
            return f"{type(self).__name__}(<not constructed>)"
        return (
            f"{type(self).__name__}(model={self.model!r}, query_model={self.query_model!r}, "
            f"base_url={self.base_url!r}, fetch_labels={self.fetch_labels!r})"
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> ChromaSparseEmbeddingFunction:
        # Settings are immutable and the instance is thread-safe, so a copy would only
        # duplicate connection pools; chromadb deep-copies configs that hold functions.
        return self

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP client this instance created; a client passed in stays yours."""
        with self._lock:
            if not self._owns_client:
                return
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the clients this instance created (the async one of the running loop)."""
        self.close()
        loop = asyncio.get_running_loop()
        with self._lock:
            aclient = self._aclients.pop(loop, None)
        if aclient is not None:
            await aclient.aclose()

    def __enter__(self) -> ChromaSparseEmbeddingFunction:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> ChromaSparseEmbeddingFunction:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- sync path ----------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._owns_client = True
                self._client = sync_client(self._timeout, self._settings.max_concurrency)
            return self._client

    def _embed(self, texts: list[str], side: Side) -> SparseVectors:
        request = self._core.requests[side]
        out: list[SparseVector | None] = [None] * len(texts)
        spans = self._core.batches(len(texts))
        # Set when the call fails or is interrupted: batches still retrying or waiting for
        # the throttle give up at their next step instead of running out their retries.
        stop = threading.Event()
        with progress_bar(
            self.progress and len(spans) > 1, len(texts), f"embedding ({request.model})"
        ) as bar:

            def run(span: tuple[int, int]) -> None:
                start, end = span
                out[start:end] = self._send(texts[start:end], request, stop)
                bar.update(end - start)

            workers = min(self._settings.max_concurrency, len(spans))
            if workers == 1:
                for span in spans:
                    run(span)
            else:
                pool = ThreadPoolExecutor(workers, thread_name_prefix="chroma-sparse-ef")
                futures: list[Future[None]] = [pool.submit(run, span) for span in spans]
                try:
                    wait(futures, return_when=FIRST_EXCEPTION)
                except BaseException:
                    # Ctrl-C: control comes back now; the workers end within one attempt.
                    stop.set()
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
                # On an error, batches not started never start and the ones in flight end
                # after their current attempt, so the call returns within one timeout.
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                _raise_first_error(futures)
        return _complete(out)

    def _pause(self, seconds: float, stop: threading.Event) -> None:
        if self._sleep is None:
            stop.wait(seconds)
        else:
            self._sleep(seconds)
        if stop.is_set():
            raise _Stopped

    def _turn(self, stop: threading.Event) -> float:
        """Wait until the throttle lets a request start; return when it started."""
        core = self._core
        while True:
            if stop.is_set():
                raise _Stopped
            now = core.monotonic()
            wait = core.throttle.acquire(now)
            if wait <= 0:
                return now
            core.usage.waited(wait)
            self._pause(wait, stop)

    def _send(
        self, texts: Sequence[str], request: Request, stop: threading.Event
    ) -> list[SparseVector]:
        core = self._core
        body = request.body(texts, self._settings.fetch_labels)
        retries = 0
        while True:
            sent_at = self._turn(stop)
            core.usage.sent()
            reply = attempt(
                self._http(),
                core.url,
                body,
                request.headers,
                timeout=self._timeout,
                seconds=self._settings.timeout,
                limit_for=lambda status: core.body_limit(status, len(texts)),
            )
            if isinstance(reply, Failure):
                action: Done | Retry | Split = core.decide_transport(reply, request, retries)
            else:
                action = core.decide(reply, texts, request, retries, sent_at)
            if isinstance(action, Done):
                return action.vectors
            if isinstance(action, Split):
                mid = len(texts) // 2
                vectors = self._send(texts[:mid], request, stop)
                vectors += self._send(texts[mid:], request, stop)
                core.accepted_after_split(len(texts) - mid)
                return vectors
            core.usage.retried()
            if action.throttled:
                core.usage.waited(action.delay)
            self._pause(action.delay, stop)
            retries += 1

    # -- async path ---------------------------------------------------------------------

    def _ahttp(self) -> httpx.AsyncClient:
        if self._aclient is not None:
            return self._aclient
        # An AsyncClient's connections belong to the loop that opened them, so each loop
        # (another asyncio.run, another thread) gets its own; it goes with its loop.
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._aclients.get(loop)
            if client is None:
                client = async_client(self._timeout, self._settings.max_concurrency)
                self._aclients[loop] = client
            return client

    async def _aembed(self, texts: list[str], side: Side) -> SparseVectors:
        request = self._core.requests[side]
        out: list[SparseVector | None] = [None] * len(texts)
        spans = self._core.batches(len(texts))
        gate = asyncio.Semaphore(self._settings.max_concurrency)
        client = self._ahttp()
        with progress_bar(
            self.progress and len(spans) > 1, len(texts), f"embedding ({request.model})"
        ) as bar:

            async def run(span: tuple[int, int]) -> None:
                start, end = span
                async with gate:
                    out[start:end] = await self._asend(client, texts[start:end], request)
                bar.update(end - start)

            tasks = [asyncio.ensure_future(run(span)) for span in spans]
            for task in tasks:
                # A task may end after the call has raised (a cancel that raced with its
                # reply): its error is read on completion, so asyncio never logs it.
                task.add_done_callback(_read_outcome)
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for task in tasks:
                    task.cancel()
            # The earliest batch's error, as on the sync path, whichever finished first.
            # Every finished task's error is read, so asyncio logs none as unretrieved.
            errors = [task.exception() for task in tasks if task.done() and not task.cancelled()]
            for exc in errors:
                if exc is not None:
                    raise exc
        return _complete(out)

    async def _aturn(self) -> float:
        """`_turn` on the event loop."""
        core = self._core
        while True:
            now = core.monotonic()
            wait = core.throttle.acquire(now)
            if wait <= 0:
                return now
            core.usage.waited(wait)
            await self._async_sleep(wait)

    async def _asend(
        self, client: httpx.AsyncClient, texts: Sequence[str], request: Request
    ) -> list[SparseVector]:
        core = self._core
        body = request.body(texts, self._settings.fetch_labels)
        retries = 0
        while True:
            sent_at = await self._aturn()
            core.usage.sent()
            reply = await attempt_async(
                client,
                core.url,
                body,
                request.headers,
                timeout=self._timeout,
                seconds=self._settings.timeout,
                limit_for=lambda status: core.body_limit(status, len(texts)),
            )
            if isinstance(reply, Failure):
                action: Done | Retry | Split = core.decide_transport(reply, request, retries)
            else:
                action = core.decide(reply, texts, request, retries, sent_at)
            if isinstance(action, Done):
                return action.vectors
            if isinstance(action, Split):
                mid = len(texts) // 2
                first = await self._asend(client, texts[:mid], request)
                vectors = first + await self._asend(client, texts[mid:], request)
                core.accepted_after_split(len(texts) - mid)
                return vectors
            core.usage.retried()
            if action.throttled:
                core.usage.waited(action.delay)
            await self._async_sleep(action.delay)
            retries += 1


_ALWAYS_IN_CONFIG = frozenset({"model", "query_model", "api_key_env_var"})


def _query_model_of(config: dict[str, Any]) -> str | None:
    """The query model a config embeds with: explicit, else the catalog's twin, else model."""
    explicit = config.get("query_model")
    if explicit or "model" not in config:
        return explicit
    return Settings(model=config["model"]).resolved_query_model


def _read_outcome(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


def _complete(out: list[SparseVector | None]) -> list[SparseVector]:
    if any(v is None for v in out):  # pragma: no cover - every path fills or raises
        raise ServiceError("internal error: a batch finished without results")
    return out  # type: ignore[return-value]


class _Stopped(Exception):
    """A batch gave up because another one failed (never leaves the call)."""


def _raise_first_error(futures: Sequence[Future[None]]) -> None:
    # The earliest batch's error, so the same failure is reported however threads raced;
    # batches that only stopped because of it are skipped.
    for future in futures:
        if not future.cancelled():
            exc = future.exception()
            if exc is not None and not isinstance(exc, _Stopped):
                raise exc
