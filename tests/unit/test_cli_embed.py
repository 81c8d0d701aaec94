"""`chroma-sparse-ef embed` and `models` over a fake service: no server, no network."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from chroma_sparse_ef import MODELS
from chroma_sparse_ef.cli import app

from .fake_service import FakeService, error

SECRET = "ck-planted-secret-cli-embed-7"
URL = "https://embed.example.test"


@pytest.fixture
def runner() -> CliRunner:
    """A typer CLI runner with a wide terminal, so tables do not wrap."""
    return CliRunner(env={"COLUMNS": "200"})


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> FakeService:
    """Route every httpx.Client the function creates to a fake service; set a key."""
    fake = FakeService()
    client = functools.partial(httpx.Client, transport=httpx.MockTransport(fake))
    monkeypatch.setattr("chroma_sparse_ef._embedding_function.httpx.Client", client)
    monkeypatch.setenv("CHROMA_API_KEY", SECRET)
    return fake


def one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("chroma-sparse-ef: error: ")
    assert "Traceback" not in output
    return lines[0]


def test_help_lists_the_embed_and_models_commands(runner: CliRunner) -> None:
    """`--help` shows the new commands next to `serve`."""
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("embed", "models", "serve"):
        assert command in result.output


@pytest.mark.parametrize("command", ["embed", "models"])
def test_every_command_has_help(runner: CliRunner, command: str) -> None:
    """`<command> --help` exits 0 and describes the command."""
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_embed_help_says_the_local_server_serves_bm25(runner: CliRunner) -> None:
    """The help is honest about what the local fallback returns."""
    result = runner.invoke(app, ["embed", "--help"])
    assert "BM25" in result.output
    assert "CHROMA_API_KEY" in result.output


def test_embed_prints_labels_sorted_by_weight(runner: CliRunner, service: FakeService) -> None:
    """The table lists label, index and value, heaviest first, with the model named."""
    result = runner.invoke(app, ["embed", "--base-url", URL, "beta alpha beta gamma beta"])
    assert result.exit_code == 0, result.output
    assert "prithivida/Splade_PP_en_v1 (document): 3 non-zero, 5 tokens" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "│" in line]
    assert [row.split("│")[1].strip() for row in rows] == ["beta", "alpha", "gamma"]
    assert "3.0000" in rows[0]
    assert "local server" not in result.output


def test_embed_sends_labels_request_with_the_key(runner: CliRunner, service: FakeService) -> None:
    """One request, labels asked for, the key from CHROMA_API_KEY in the header."""
    runner.invoke(app, ["embed", "--base-url", URL, "hello"])
    assert len(service.requests) == 1
    assert service.bodies[0]["fetch_labels"] is True
    assert service.requests[0].headers["x-chroma-token"] == SECRET


def test_embed_top_limits_the_rows_and_says_how_many_are_hidden(
    runner: CliRunner, service: FakeService
) -> None:
    """`--top 1` shows the heaviest entry and notes the rest."""
    result = runner.invoke(app, ["embed", "--base-url", URL, "--top", "1", "a b b"])
    rows = [line for line in result.stdout.splitlines() if "│" in line]
    assert len(rows) == 1
    assert "b" in rows[0]
    assert "1 lighter entries not shown" in result.stdout


def test_embed_labels_are_printed_literally_not_as_markup(
    runner: CliRunner, service: FakeService
) -> None:
    """A label such as "[CLS]" is data, printed as itself."""
    result = runner.invoke(app, ["embed", "--base-url", URL, "[CLS] [bold]x"])
    assert "[CLS]" in result.stdout
    assert "[bold]x" in result.stdout


def test_embed_json_is_machine_readable(runner: CliRunner, service: FakeService) -> None:
    """`--json` prints one JSON object: indices ascending, labels aligned, tokens counted."""
    result = runner.invoke(app, ["embed", "--base-url", URL, "--json", "b a b"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["model"] == "prithivida/Splade_PP_en_v1"
    assert payload["side"] == "document"
    assert payload["backend"] == "service"
    assert payload["num_tokens"] == 3
    assert payload["indices"] == sorted(payload["indices"])
    weights = dict(zip(payload["labels"], payload["values"], strict=True))
    assert weights == {"a": 1.0, "b": 2.0}


def test_embed_query_uses_the_query_model_and_target(
    runner: CliRunner, service: FakeService
) -> None:
    """`--query` embeds with the catalog's query twin."""
    model = "naver/efficient-splade-VI-BT-large-doc"
    result = runner.invoke(app, ["embed", "--base-url", URL, "--json", "--query", "-m", model, "q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["side"] == "query"
    assert service.requests[0].headers["x-chroma-embedding-model"].endswith("-query")


def test_embed_reads_stdin_for_a_dash(runner: CliRunner, service: FakeService) -> None:
    """`embed -` embeds standard input."""
    result = runner.invoke(app, ["embed", "--base-url", URL, "--json", "-"], input="from stdin")
    assert result.exit_code == 0, result.output
    assert service.bodies[0]["texts"] == ["from stdin"]


def test_embed_base_url_comes_from_chroma_embed_url(
    runner: CliRunner, service: FakeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CHROMA_EMBED_URL picks the service, as for the embedding function."""
    monkeypatch.setenv("CHROMA_EMBED_URL", URL)
    result = runner.invoke(app, ["embed", "x"])
    assert result.exit_code == 0, result.output
    assert str(service.requests[0].url) == f"{URL}/embed_sparse"


def test_a_service_error_is_one_line_without_the_key(
    runner: CliRunner, service: FakeService
) -> None:
    """A 401 prints one `chroma-sparse-ef: error:` line, never a traceback or the key."""
    service.script.append(error(401, f"bad token {SECRET}"))
    result = runner.invoke(app, ["embed", "--base-url", URL, "x"])
    assert result.exit_code == 1
    line = one_error_line(result.output)
    assert "401" in line
    assert SECRET not in result.output


def test_a_dense_only_model_fails_before_any_request(
    runner: CliRunner, service: FakeService
) -> None:
    """Qwen is refused by the function itself: one line, nothing sent."""
    result = runner.invoke(
        app, ["embed", "--base-url", URL, "-m", "Qwen/Qwen3-Embedding-0.6B", "x"]
    )
    assert result.exit_code == 1
    assert "dense-only" in one_error_line(result.output)
    assert service.requests == []


def test_a_remote_url_without_a_key_fails_naming_the_env_var(runner: CliRunner) -> None:
    """No key for a non-loopback URL: one line naming CHROMA_API_KEY, nothing started."""
    result = runner.invoke(app, ["embed", "--base-url", URL, "x"])
    assert result.exit_code == 1
    assert "CHROMA_API_KEY" in one_error_line(result.output)


def test_local_and_base_url_together_are_refused(runner: CliRunner) -> None:
    """`--local` with a URL is a contradiction, reported before anything starts."""
    result = runner.invoke(app, ["embed", "--local", "--base-url", URL, "x"])
    assert result.exit_code == 1
    assert "--local" in one_error_line(result.output)


def test_models_lists_every_catalog_entry(runner: CliRunner) -> None:
    """The table names all five hosted models and marks the dense-only one."""
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    for name in MODELS:
        assert name in result.stdout
    qwen = next(line for line in result.stdout.splitlines() if "Qwen" in line)
    assert "no" in qwen


def test_models_json_matches_the_catalog(runner: CliRunner) -> None:
    """`models --json` is the catalog as a list of objects."""
    result = runner.invoke(app, ["models", "--json"])
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == list(MODELS)
    assert {row["name"]: row["sparse"] for row in rows} == {
        name: info.sparse for name, info in MODELS.items()
    }


@pytest.mark.parametrize("text", ["", "   \n"])
def test_embed_of_an_empty_text_is_an_error_like_search(
    runner: CliRunner, service: FakeService, text: str
) -> None:
    """`embed ""` fails with one line, as `search ""` does, and sends nothing."""
    result = runner.invoke(app, ["embed", "--base-url", URL, text])
    assert result.exit_code == 1
    assert "text must be a non-empty string" in one_error_line(result.output)
    assert service.requests == []


def test_search_of_an_empty_query_fails_before_opening_anything(
    runner: CliRunner, tmp_path: Path
) -> None:
    """`search ""` fails at once, even where no collection exists."""
    result = runner.invoke(app, ["search", "", "--path", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "query must be a non-empty string" in one_error_line(result.output)


def test_an_unknown_model_lists_the_models_once(runner: CliRunner, service: FakeService) -> None:
    """`embed --model foo/bar`: one line naming each sparse model exactly once."""
    result = runner.invoke(app, ["embed", "--base-url", URL, "--model", "foo/bar", "hi"])
    assert result.exit_code == 1
    line = one_error_line(result.output)
    assert "unknown model 'foo/bar'" in line
    for name, info in MODELS.items():
        assert line.count(name) == (1 if info.sparse else 0)
    assert service.requests == []


def test_search_path_that_is_a_file_is_refused_without_suggesting_demo(
    runner: CliRunner, tmp_path: Path
) -> None:
    """`search --path FILE` says the path is a file; it never suggests `demo --path
    FILE`, which would fail the same way."""
    file = tmp_path / "notes.txt"
    file.write_text("not a database")
    result = runner.invoke(app, ["search", "anything", "--path", str(file)])
    assert result.exit_code == 1
    line = one_error_line(result.output)
    assert "is a file" in line
    assert "demo --path" not in line


@pytest.mark.parametrize("extra", ["true", "false", "1"])
def test_version_refuses_a_value(runner: CliRunner, extra: str) -> None:
    """`--version true` is an error (exit 2), not the version."""
    result = runner.invoke(app, ["--version", extra])
    assert result.exit_code == 2
    assert "chroma-sparse-ef 0" not in result.output


@pytest.mark.parametrize("command", ["serve", "embed", "search", "demo", "models"])
def test_help_shows_no_bool_metavar_and_whole_env_var_names(
    runner: CliRunner, command: str
) -> None:
    """At 80 columns, plain flags carry no `<bool>` and env var names are never cut."""
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert "<bool>" not in result.output
    assert "…" not in result.output
    if command == "serve":
        assert "CHROMA_SPARSE_EF_SERVER_API_KEY" in result.output


def test_cloud_connection_failures_say_what_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the three Cloud variables set, chromadb's bare "Could not connect" gains
    what chose Cloud and what to do; the key's value is never printed."""
    from chroma_sparse_ef.cli import explain

    bare = ValueError("Could not connect to a Chroma server. Are you sure it is running?")
    monkeypatch.delenv("CHROMA_TENANT", raising=False)
    assert explain(bare) == str(bare)
    monkeypatch.setenv("CHROMA_API_KEY", "ck-fake-cloud-key-77")
    monkeypatch.setenv("CHROMA_TENANT", "tenant-x")
    monkeypatch.setenv("CHROMA_DATABASE", "db-y")
    line = explain(bare)
    assert line.startswith("Chroma Cloud did not answer (Could not connect")
    assert "CHROMA_API_KEY, CHROMA_TENANT, CHROMA_DATABASE are set" in line
    assert "--local" in line
    assert "ck-fake-cloud-key-77" not in line
