"""`chroma-sparse-ef embed` against real local servers, in-process and as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from chroma_sparse_ef.cli import app
from chroma_sparse_ef.testing import LocalServer

SECRET = "ck-planted-secret-cli-integration-3"
NOTICE = "no CHROMA_API_KEY: using the local server (BM25 vectors, not SPLADE)"


@pytest.fixture
def runner() -> CliRunner:
    """A typer CLI runner with a wide terminal."""
    return CliRunner(env={"COLUMNS": "200"})


def test_without_key_or_url_it_starts_the_local_server_and_says_so(runner: CliRunner) -> None:
    """No CHROMA_API_KEY and no URL: in-process BM25 server, announced on stderr."""
    result = runner.invoke(app, ["embed", "Return the JSON encoding of an object"])
    assert result.exit_code == 0, result.output
    assert NOTICE in result.stderr
    assert "json" in result.stdout
    assert "BM25 weights from the local server, not SPLADE" in result.stdout


def test_local_flag_wins_over_a_key(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--local` uses the in-process server even when a key is set, and says why."""
    monkeypatch.setenv("CHROMA_API_KEY", SECRET)
    result = runner.invoke(app, ["embed", "--local", "--json", "sockets and files"])
    assert result.exit_code == 0, result.output
    assert "--local: using the local server" in result.stderr
    payload = json.loads(result.stdout)
    assert payload["backend"] == "local BM25"
    assert set(payload["labels"]) == {"socket", "file"}


def test_a_server_from_chroma_embed_url_is_used_with_the_key(
    runner: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    embed_server_factory: Callable[..., LocalServer],
) -> None:
    """CHROMA_EMBED_URL and CHROMA_API_KEY: that server, no in-process one."""
    server = embed_server_factory(api_key=SECRET)
    monkeypatch.setenv("CHROMA_EMBED_URL", server.url)
    monkeypatch.setenv("CHROMA_API_KEY", SECRET)
    result = runner.invoke(app, ["embed", "--json", "hello world"])
    assert result.exit_code == 0, result.output
    assert "local server" not in result.stderr
    assert json.loads(result.stdout)["num_tokens"] == 2


def test_a_wrong_key_is_one_error_line_without_the_key(
    runner: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    embed_server_factory: Callable[..., LocalServer],
) -> None:
    """A 401 from a real server: exit 1, one line, the wrong key never printed."""
    server = embed_server_factory(api_key="the-right-key")
    monkeypatch.setenv("CHROMA_API_KEY", SECRET)
    result = runner.invoke(app, ["embed", "--base-url", server.url, "hello"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("chroma-sparse-ef: error: ")
    assert "401" in lines[0]
    assert SECRET not in result.output


def test_an_unknown_model_reads_clearly(runner: CliRunner) -> None:
    """The local server's 400 for an unknown model becomes one readable line."""
    result = runner.invoke(app, ["embed", "-m", "acme/unknown", "hello"])
    assert result.exit_code == 1
    assert "acme/unknown" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.output


def test_the_console_script_runs_end_to_end_in_a_fresh_process() -> None:
    """`python -m chroma_sparse_ef.cli embed --json` works from a clean environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHROMA_")}
    proc = subprocess.run(
        [sys.executable, "-m", "chroma_sparse_ef.cli", "embed", "--json", "parse JSON text"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert NOTICE in proc.stderr
    assert "Traceback" not in proc.stderr
    payload = json.loads(proc.stdout)
    assert "json" in payload["labels"]
    assert len(payload["indices"]) == len(payload["values"]) == len(payload["labels"])


def test_a_text_with_no_weighted_token_says_no_matches(runner: CliRunner) -> None:
    """Only stopwords: BM25 gives an empty vector, and `embed` says so instead of an
    empty table."""
    result = runner.invoke(app, ["embed", "the and of"])
    assert result.exit_code == 0, result.output
    assert "no matches" in result.stdout
    assert "┃ label" not in result.stdout
