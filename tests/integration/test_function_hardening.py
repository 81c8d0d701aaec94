"""The function against what a cold review found (issue 9 follow-up), on loopback servers:
interruptions carry no key, the response cap holds for compressed bodies, and a failed or
interrupted call does not wait for the other batches to run out their retries.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import traceback
import tracemalloc
from collections.abc import Callable

import httpx
import pytest

from chroma_sparse_ef import (
    APIStatusError,
    APITimeoutError,
    ChromaSparseEmbeddingFunction,
    InvalidRequestError,
    InvalidResponseError,
)

from .hostile_server import TRICKLE_INTERVAL, hostile_server

SECRET = "ck-planted-key-3be81c55"


def formatted(exc: BaseException) -> str:
    """The exception as a locals-showing tracker would print it, chain included."""
    return "".join(traceback.TracebackException.from_exception(exc, capture_locals=True).format())


def embed(ef: ChromaSparseEmbeddingFunction, texts: list[str], mode: str) -> object:
    if mode == "sync":
        return ef(texts)
    return asyncio.run(ef.acall(texts))


def interrupted_sync(
    url: str, answering: Callable[[], bool], texts: list[str], **kwargs: object
) -> tuple[BaseException, float]:
    """Ctrl-C during a call; the KeyboardInterrupt and how long the call took to end after it.

    A real SIGINT sent to the main thread, as a terminal does, so that it also interrupts
    a blocking wait (which `_thread.interrupt_main` would not). It is sent once the server
    has read a request and its answer is trickling, not after a fixed delay: on a loaded
    machine a fixed delay can fire before the request is even sent. (`answering` says so;
    the server object itself stays out of this frame, whose locals the traceback shows:
    it records the tokens it received.)
    """
    ef = ChromaSparseEmbeddingFunction(base_url=url, api_key=SECRET, **kwargs)  # type: ignore[arg-type]
    main = threading.main_thread().ident
    assert main is not None
    assert threading.current_thread() is threading.main_thread()
    sent_at: list[float] = []
    done = threading.Event()

    def interrupt_once_answering() -> None:
        deadline = time.monotonic() + 60
        while not answering() and time.monotonic() < deadline and not done.is_set():
            time.sleep(0.01)
        if done.is_set():
            return
        time.sleep(2 * TRICKLE_INTERVAL)  # the client is now reading the trickled body
        sent_at.append(time.monotonic())
        signal.pthread_kill(main, signal.SIGINT)

    # Python raises KeyboardInterrupt on SIGINT only where SIGINT was not ignored when it
    # started; a run launched in the background by a non-interactive shell (as CI may be)
    # inherits SIGINT ignored. Ctrl-C in a terminal is what is simulated, so its handler is.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupter = threading.Thread(target=interrupt_once_answering, daemon=True)
    interrupter.start()
    try:
        ef(texts)
    except KeyboardInterrupt as exc:
        return exc, time.monotonic() - sent_at[0]
    finally:
        done.set()
        signal.signal(signal.SIGINT, previous)
    raise AssertionError("the call was not interrupted")


class TestInterruptionsCarryNoKey:
    def test_ctrl_c_during_an_attempt(self) -> None:
        """Ctrl-C while httpx reads a trickled body: the traceback with locals holds no key."""
        with hostile_server("trickle_body") as server:
            exc, _ = interrupted_sync(
                server.url, lambda: bool(server.tokens), ["hello"], timeout=30.0
            )
        text = formatted(exc)
        assert "_transport.py" in text  # the interruption did arrive inside an attempt
        assert SECRET not in text

    def test_cancelling_an_async_call(self) -> None:
        """A cancelled `acall`: its CancelledError, formatted with locals, holds no key."""

        async def run(url: str) -> BaseException:
            ef = ChromaSparseEmbeddingFunction(base_url=url, api_key=SECRET, timeout=5.0)
            async with ef:
                task = asyncio.ensure_future(ef.acall(["hello"]))
                await asyncio.sleep(0.3)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError as exc:
                    return exc
            raise AssertionError("the call was not cancelled")

        with hostile_server("trickle_body") as server:
            exc = asyncio.run(run(server.url))
        assert SECRET not in formatted(exc)


class TestInterruptionsEndTheCall:
    def test_ctrl_c_returns_at_once_with_batches_in_flight(self) -> None:
        """Ctrl-C with several batches trickling: control comes back in well under one
        attempt's timeout, not after every batch ran out its retries."""
        with hostile_server("trickle_body") as server:
            _, took = interrupted_sync(
                server.url,
                lambda: bool(server.tokens),
                ["a", "b", "c"],
                batch_size=1,
                timeout=30.0,
                max_retries=2,
            )
        # Before the fix the call ran on until every batch had used its attempts (minutes
        # at this timeout); "at once" leaves room for a loaded machine, not for an attempt.
        assert took < 5.0, took

    @pytest.mark.parametrize("mode", ["sync", "async"])
    def test_an_error_stops_the_batches_waiting_to_retry(self, mode: str) -> None:
        """One batch gets a 400 while the others wait 30 s to retry a 503: the call raises
        the 400 at once instead of waiting for them."""
        with hostile_server("bad_or_busy") as server:
            ef = ChromaSparseEmbeddingFunction(
                base_url=server.url, api_key=SECRET, batch_size=1, max_retries=3
            )
            start = time.monotonic()
            with pytest.raises(InvalidRequestError):
                embed(ef, ["busy", "busy", "bad", "busy"], mode)
            took = time.monotonic() - start
        assert took < 10.0, took


class TestCompressedBodies:
    @pytest.mark.parametrize("mode", ["gzip", "deflate", "raw_deflate"])
    def test_a_compressed_answer_is_read(self, mode: str) -> None:
        """gzip and deflate (with or without the zlib wrapper) answers parse as usual."""
        with hostile_server(mode) as server:
            ef = ChromaSparseEmbeddingFunction(base_url=server.url, api_key=SECRET)
            (vector,) = ef(["hello"])
        assert list(vector.indices) == [1]

    def test_only_gzip_and_deflate_are_asked_for(self) -> None:
        """`accept-encoding` names only what the bounded decoder reads."""
        with hostile_server("record") as server:
            seen: list[str] = []

            def log(request: httpx.Request) -> None:
                seen.append(request.headers["accept-encoding"])

            client = httpx.Client(event_hooks={"request": [log]})
            ef = ChromaSparseEmbeddingFunction(
                base_url=server.url, api_key=SECRET, http_client=client
            )
            ef(["hello"])
            client.close()
        assert seen == ["gzip, deflate"]

    @pytest.mark.parametrize("mode", ["sync", "async"])
    def test_a_gzip_bomb_is_refused_without_inflating_it(self, mode: str) -> None:
        """A ~100 KB gzip body that inflates to 100 MB for one text: InvalidResponseError,
        and the client never holds more than a few MB of it (the cap is about 1 MiB)."""
        with hostile_server("gzip_bomb", huge_bytes=100_000_000) as server:
            ef = ChromaSparseEmbeddingFunction(base_url=server.url, api_key=SECRET)
            tracemalloc.start()
            try:
                with pytest.raises(InvalidResponseError, match="larger than"):
                    embed(ef, ["one text"], mode)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        # httpx's own decoder inflates a 64 KiB chunk to ~64 MiB before any check.
        assert peak < 16 * 1024 * 1024, peak


class TestRedirects:
    @pytest.mark.parametrize("mode", ["sync", "async"])
    def test_a_redirect_is_not_followed_even_by_a_client_that_follows_them(self, mode: str) -> None:
        """A 307 to another host (127.0.0.2), with the caller's clients set to follow
        redirects: the call fails with the 307 and the other host never sees the key
        (httpx drops only `Authorization` on such a redirect)."""
        with (
            hostile_server("record", host="127.0.0.2") as foreign,
            hostile_server("redirect", redirect_to="") as server,
        ):
            server.redirect_to = foreign.url + "/embed_sparse"
            ef = ChromaSparseEmbeddingFunction(
                base_url=server.url,
                api_key=SECRET,
                http_client=httpx.Client(follow_redirects=True),
                async_http_client=httpx.AsyncClient(follow_redirects=True),
            )
            with pytest.raises(APIStatusError) as info:
                embed(ef, ["hello"], mode)
            tokens = list(foreign.tokens)
        assert info.value.status_code == 307
        assert tokens == []


class TestDeadlineThroughAProxy:
    def test_headers_trickled_through_an_env_proxy_end_at_the_deadline(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """HTTP_PROXY points at a loopback proxy that trickles its headers: the attempt
        still ends at its 1 s deadline (per-read timeouts alone would never fire)."""
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        with hostile_server("trickle_headers") as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            ef = ChromaSparseEmbeddingFunction(
                base_url="http://embed.behind-proxy.test",
                api_key=SECRET,
                timeout=1.0,
                max_retries=0,
            )
            outcome: list[BaseException] = []

            def run() -> None:
                try:
                    ef(["hello"])
                except BaseException as exc:
                    outcome.append(exc)

            # In a daemon thread, so a regression fails here instead of hanging the suite.
            worker = threading.Thread(target=run, daemon=True)
            start = time.monotonic()
            worker.start()
            worker.join(10.0)
            took = time.monotonic() - start
            assert len(proxy.tokens) == 1  # it did go through the proxy
        assert not worker.is_alive(), "the attempt outlived its deadline"
        assert took < 2.0, took
        assert isinstance(outcome[0], APITimeoutError), outcome


class TestDeadlineWithACallersClient:
    def test_headers_trickled_to_a_callers_client_end_at_the_deadline(self) -> None:
        """With `http_client=` a plain httpx.Client, a server trickling its headers is
        still cut off at the 1 s deadline (per-read timeouts alone would never fire)."""
        with hostile_server("trickle_headers") as server:
            client = httpx.Client()
            ef = ChromaSparseEmbeddingFunction(
                base_url=server.url,
                api_key=SECRET,
                timeout=1.0,
                max_retries=0,
                http_client=client,
            )
            outcome: list[BaseException] = []

            def run() -> None:
                try:
                    ef(["hello"])
                except BaseException as exc:
                    outcome.append(exc)

            worker = threading.Thread(target=run, daemon=True)
            start = time.monotonic()
            worker.start()
            worker.join(10.0)
            took = time.monotonic() - start
        assert not worker.is_alive(), "the attempt outlived its deadline"
        assert took < 2.0, took
        assert isinstance(outcome[0], APITimeoutError), outcome
        client.close()
