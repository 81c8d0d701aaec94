"""The function against hostile loopback servers: no key in tracebacks, a deadline per
attempt, a response cap, keys only where they belong (issue 9); and a job that completes
under a server's rate limit with defaults (issue 8).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
from chromadb.api.types import Schema, SparseVectorIndexConfig
from chromadb.execution.expression.operator import Key

from chroma_sparse_ef import (
    ChromaSparseEmbeddingFunction,
    EmbeddingError,
    InvalidResponseError,
    ServiceError,
)
from chroma_sparse_ef._corpus import stdlib_docstrings
from chroma_sparse_ef._exceptions import APIConnectionError, APITimeoutError
from chroma_sparse_ef.testing import LocalServer

from .hostile_server import hostile_server

SECRET = "ck-planted-key-9f2c41d7"
ROOT = Path(__file__).resolve().parents[2]


def call(ef: ChromaSparseEmbeddingFunction, texts: list[str], mode: str) -> Any:
    if mode == "sync":
        return ef(texts)

    async def run() -> Any:
        async with ef:
            return await ef.acall(texts)

    return asyncio.run(run())


def formatted(exc: BaseException) -> str:
    """The exception as a locals-showing tracker would print it, chain included."""
    return "".join(traceback.TracebackException.from_exception(exc, capture_locals=True).format())


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestNoKeyInTracebacks:
    def raised(self, base_url: str, mode: str, **kwargs: Any) -> EmbeddingError:
        ef = ChromaSparseEmbeddingFunction(
            base_url=base_url, api_key=SECRET, max_retries=0, **kwargs
        )
        with pytest.raises(EmbeddingError) as info:
            call(ef, ["hello"], mode)
        return info.value

    def test_connection_refused(self, mode: str) -> None:
        """Connection refused: no frame local or chained exception shows the key."""
        from .hostile_server import closed_port_url

        exc = self.raised(closed_port_url(), mode)
        assert isinstance(exc, APIConnectionError)
        assert isinstance(exc, ServiceError)  # the 0.x name still catches it
        text = formatted(exc)
        assert "could not reach" in text
        assert SECRET not in text

    def test_timeout(self, mode: str) -> None:
        """A trickling server timed out: the traceback with locals holds no key."""
        with hostile_server("trickle_body") as server:
            exc = self.raised(server.url, mode, timeout=0.5)
        assert isinstance(exc, APITimeoutError)
        assert "timed out" in str(exc)
        assert SECRET not in formatted(exc)

    @pytest.mark.parametrize("status", [400, 401, 500])
    def test_status_errors(self, mode: str, status: int) -> None:
        """4xx and 5xx answers: the traceback with locals holds no key."""
        with hostile_server("status", status=status) as server:
            exc = self.raised(server.url, mode)
        assert exc.status_code == status
        assert SECRET not in formatted(exc)

    def test_pytest_showlocals_of_a_failing_call(self, tmp_path: Path) -> None:
        """`pytest --showlocals` on a test whose call fails prints no trace of the key."""
        from .hostile_server import closed_port_url

        test = tmp_path / "test_leak.py"
        test.write_text(
            textwrap.dedent(
                f"""
                from chroma_sparse_ef import ChromaSparseEmbeddingFunction

                def test_fails():
                    # The key comes from CHROMA_API_KEY, so the source shows none.
                    ef = ChromaSparseEmbeddingFunction(
                        base_url={closed_port_url()!r}, max_retries=0
                    )
                    assert ef._core._api_key
                    ef(["hello"])
                """
            )
        )
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "--showlocals", "-p", "no:cacheprovider", str(test)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "CHROMA_API_KEY": SECRET},
            timeout=120,
        )
        assert "could not reach" in result.stdout, result.stdout[-2000:]
        assert SECRET not in result.stdout + result.stderr


class TestDeadline:
    @pytest.mark.parametrize("where", ["trickle_body", "trickle_headers"])
    def test_a_trickling_server_cannot_hold_an_attempt_past_its_timeout(
        self, mode: str, where: str
    ) -> None:
        """One byte every 0.2 s, body or headers: timeout=1 ends each attempt within ~1 s."""
        with hostile_server(where) as server:
            ef = ChromaSparseEmbeddingFunction(
                base_url=server.url, api_key=SECRET, timeout=1.0, max_retries=1
            )
            ef._sleep = lambda s: None
            start = time.monotonic()
            with pytest.raises(ServiceError, match="timed out"):
                call(ef, ["hello"], mode)
            elapsed = time.monotonic() - start
        # Two attempts of 1 s, plus a 0.5 s backoff on the async path (not patched there).
        assert elapsed < 2 * 1.0 + 0.5 + 1.0, elapsed
        assert len(server.tokens) == 2


class TestResponseCap:
    def test_a_40_mb_answer_for_one_text_is_refused_early(self, mode: str) -> None:
        """The server would send 40 MB for one text: the client stops near 1 MiB."""
        with hostile_server("huge") as server:
            ef = ChromaSparseEmbeddingFunction(base_url=server.url, api_key=SECRET)
            with pytest.raises(InvalidResponseError, match="larger than"):
                call(ef, ["one text"], mode)
            time.sleep(0.2)
            # The socket buffers hold a few MB at most; the server could not send it all.
            assert server.bytes_sent < 20_000_000, server.bytes_sent


class TestKeysOnlyWhereTheyBelong:
    def test_a_stored_loopback_url_gets_the_placeholder_not_the_env_key(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A config naming 127.0.0.2 (not chosen by this process): the env key never goes."""
        monkeypatch.setenv("CHROMA_API_KEY", SECRET)
        with hostile_server("record", host="127.0.0.2") as server:
            config = {
                "model": "prithivida/Splade_PP_en_v1",
                "api_key_env_var": "CHROMA_API_KEY",
                "base_url": server.url,
            }
            ef = ChromaSparseEmbeddingFunction.build_from_config(config)
            assert len(ef(["hello"])) == 1
        assert server.tokens
        assert SECRET not in server.tokens

    def test_the_url_of_chroma_embed_url_gets_the_env_key(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """CHROMA_EMBED_URL names 127.0.0.3: a stored config with that URL sends the key."""
        monkeypatch.setenv("CHROMA_API_KEY", SECRET)
        with hostile_server("record", host="127.0.0.3") as server:
            monkeypatch.setenv("CHROMA_EMBED_URL", server.url)
            config = {
                "model": "prithivida/Splade_PP_en_v1",
                "api_key_env_var": "CHROMA_API_KEY",
                "base_url": server.url,
            }
            ChromaSparseEmbeddingFunction.build_from_config(config)(["hello"])
        assert server.tokens == [SECRET]

    def test_a_schema_opened_in_another_process_never_sends_its_key_to_the_stored_url(
        self,
    ) -> None:
        """Process A stores a schema naming 127.0.0.4; process B, with CHROMA_API_KEY set,
        writes through a real Collection built from it: B's key never reaches the host;
        a non-loopback stored URL makes the write fail before any request, naming the fix.
        """
        with hostile_server("record", host="127.0.0.4") as server:
            results = {}
            for url in (server.url, "https://collector.example.invalid"):
                ef = ChromaSparseEmbeddingFunction(base_url=url, api_key="creator-key")
                schema = Schema().create_index(
                    config=SparseVectorIndexConfig(source_key=Key.DOCUMENT, embedding_function=ef),
                    key="sparse_embedding",
                )
                results[url] = self.write_in_another_process(json.dumps(schema.serialize_to_json()))
        assert results[server.url] == "ok"
        assert server.tokens
        assert SECRET not in server.tokens
        assert "creator-key" not in server.tokens
        refused = results["https://collector.example.invalid"]
        assert refused.startswith("MissingAPIKeyError")
        assert "CHROMA_EMBED_URL" in refused

    def write_in_another_process(self, schema_json: str) -> str:
        script = textwrap.dedent(
            """
            import json, sys, uuid
            import chroma_sparse_ef
            from chromadb.api.models.Collection import Collection
            from chromadb.types import Collection as CollectionModel
            from tests.integration.chroma_doubles import HashEmbedding, RecordingServer

            model = CollectionModel(
                id=uuid.uuid4(), name="shared", configuration_json={},
                serialized_schema=json.loads(sys.argv[1]), metadata=None, dimension=None,
                tenant="default_tenant", database="default_database",
            )
            coll = Collection(client=RecordingServer(), model=model,
                              embedding_function=HashEmbedding())
            try:
                coll.add(ids=["1"], documents=["hello world"])
                print("ok")
            except Exception as exc:
                print(type(exc).__name__ + ": " + str(exc))
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", script, schema_json],
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "CHROMA_API_KEY": SECRET},
            timeout=120,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.strip().splitlines()[-1]


class TestRateLimitedJob:
    def test_defaults_complete_a_job_under_a_5_per_second_limit(
        self, embed_server_factory: Any, mode: str
    ) -> None:
        """4,000 texts against 5 requests/s: done with defaults, >= 80 % of the limit's
        throughput, and few 429s (the opening burst of 16 requests against a bucket of 5).
        """
        server: LocalServer = embed_server_factory(rate_limit="5/s")
        texts = [f"{i} {d.text}" for i, d in enumerate(stdlib_docstrings(4000))]
        texts = (texts * (4000 // len(texts) + 1))[:4000]
        ef = ChromaSparseEmbeddingFunction(base_url=server.url, api_key=f"job-{mode}")
        start = time.perf_counter()
        vectors = call(ef, texts, mode)
        seconds = time.perf_counter() - start
        assert len(vectors) == 4000
        share = (4000 / seconds) / (5 * 100)
        usage = ef.usage
        assert share >= 0.8, (seconds, usage)
        assert usage.rate_limited <= 16, usage
        assert usage.throttled_seconds > 0
