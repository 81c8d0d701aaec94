"""`chroma-sparse-ef demo` and `search`, run for real: local server, embedded Chroma."""

from __future__ import annotations

import socket
from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.api.types import DefaultEmbeddingFunction
from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2
from typer.testing import CliRunner

from chroma_sparse_ef import ChromaSparseEmbeddingFunction, HybridCollection
from chroma_sparse_ef._demo import _server_serves_bm25
from chroma_sparse_ef.cli import app
from chroma_sparse_ef.testing import run_local_server


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """Offline and deterministic: the hashing dense function, a wide terminal."""
    monkeypatch.setenv("CHROMA_SPARSE_EF_DENSE", "hashing")
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def test_demo_ingests_and_compares_the_three_modes_offline(
    runner: CliRunner, tmp_path: Path
) -> None:
    """With no key the demo says it uses the local BM25 server, ingests, and shows all legs."""
    result = runner.invoke(
        app, ["demo", "--path", str(tmp_path / "db"), "--limit", "150", "--top", "3"]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "no CHROMA_API_KEY" in out
    assert "BM25 vectors, not SPLADE" in out
    assert "offline hashing embedding" in out
    assert "ingested 150 documents" in out
    for column in ("dense", "sparse (matching tokens)", "hybrid (rank in dense · sparse)"):
        assert column in out
    assert "argparse" in out, "the command-line query should find argparse"
    assert "ingesting: BM25 sparse + hashing dense" in out, "one bar, named for what runs"
    assert "Splade_PP" not in out, "the local server computes BM25, not SPLADE"

    again = runner.invoke(
        app, ["demo", "--path", str(tmp_path / "db"), "--limit", "150", "--top", "3"]
    )
    assert again.exit_code == 0, again.output
    assert "already ingested" in again.output


def test_search_reopens_the_demo_collection_by_name(runner: CliRunner, tmp_path: Path) -> None:
    """After the demo, `search` rebuilds the functions by name and finds documents."""
    db = str(tmp_path / "db")
    assert runner.invoke(app, ["demo", "--path", db, "--limit", "150", "--top", "1"]).exit_code == 0
    result = runner.invoke(
        app, ["search", "parse command line arguments", "--path", db, "--top", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "argparse" in result.output
    sparse = runner.invoke(app, ["search", "argparse", "--path", db, "--mode", "sparse"])
    assert sparse.exit_code == 0, sparse.output


def test_search_without_data_is_one_clear_line(runner: CliRunner, tmp_path: Path) -> None:
    """No demo run yet: a one-line error that says what to run, and no folder is created."""
    missing = tmp_path / "missing"
    result = runner.invoke(app, ["search", "anything", "--path", str(missing)])
    assert result.exit_code == 1
    assert "run `chroma-sparse-ef demo" in result.output
    assert "Traceback" not in result.output
    assert not missing.exists()


def test_search_for_an_unknown_collection_is_one_clear_line(
    runner: CliRunner, tmp_path: Path
) -> None:
    """A wrong --collection name is reported, not a chromadb traceback."""
    db = str(tmp_path / "db")
    assert runner.invoke(app, ["demo", "--path", db, "--limit", "50", "--top", "1"]).exit_code == 0
    result = runner.invoke(app, ["search", "x", "--path", db, "--collection", "nope"])
    assert result.exit_code == 1
    assert "no collection 'nope'" in result.output


def test_demo_path_that_is_a_file_is_one_clear_line(runner: CliRunner, tmp_path: Path) -> None:
    """--path naming a file says so, instead of an OS error without the path."""
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    result = runner.invoke(app, ["demo", "--path", str(target), "--limit", "5"])
    assert result.exit_code == 1
    assert f"{target} is a file" in result.output


def test_demo_says_how_the_bm25_leg_is_ranked(runner: CliRunner, tmp_path: Path) -> None:
    """The local server serves BM25: the demo opens the collection with bm25=True, says so,
    and `search` reopens it with the stored flag."""
    result = runner.invoke(
        app, ["demo", "--path", str(tmp_path / "db"), "--limit", "20", "--top", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "ranked with Chroma Cloud's BM25 IDF (bm25=True)" in result.output
    again = runner.invoke(app, ["search", "argparse", "--path", str(tmp_path / "db")])
    assert again.exit_code == 0, again.output
    assert "ranked with Chroma Cloud's BM25 IDF (bm25=True)" in again.output


def test_search_with_no_match_says_so(runner: CliRunner, tmp_path: Path) -> None:
    """A query whose sparse leg finds nothing prints 'no matches', not an empty table."""
    db = str(tmp_path / "db")
    assert runner.invoke(app, ["demo", "--path", db, "--limit", "20", "--top", "1"]).exit_code == 0
    # Only stopwords: chromadb's BM25 tokenizer drops them, so the query vector is empty.
    result = runner.invoke(app, ["search", "the of and", "--path", db, "--mode", "sparse"])
    assert result.exit_code == 0, result.output
    assert "no matches for 'the of and' (sparse)" in result.output


def test_the_local_server_is_recognised_as_serving_bm25() -> None:
    """/healthz of the package's own server routes the demo's model to its BM25 backend."""
    with run_local_server() as server:
        assert _server_serves_bm25(server.url, "prithivida/Splade_PP_en_v1")
        assert not _server_serves_bm25(server.url, "Qwen/Qwen3-Embedding-0.6B")


def test_a_server_without_healthz_is_not_taken_for_bm25() -> None:
    """Nothing listening: no claim of BM25, and no error."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert not _server_serves_bm25(f"http://127.0.0.1:{port}", "prithivida/Splade_PP_en_v1")


def test_search_uses_the_dense_function_the_collection_was_built_with(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collection built with hashing is searched with hashing, even when Chroma's model
    is preferred now: a MiniLM query against hashing vectors would rank noise."""
    db = str(tmp_path / "db")
    assert runner.invoke(app, ["demo", "--path", db, "--limit", "150", "--top", "1"]).exit_code == 0
    monkeypatch.setenv("CHROMA_SPARSE_EF_DENSE", "default")
    # Were the stored function ignored, chromadb would try to download its model for the
    # query: point it at an empty cache and a refused loopback port, never the network.
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "DOWNLOAD_PATH", tmp_path / "model-cache")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        monkeypatch.setattr(
            ONNXMiniLM_L6_V2, "MODEL_DOWNLOAD_URL", f"http://127.0.0.1:{port}/onnx.tar.gz"
        )
        result = runner.invoke(app, ["search", "parse command line arguments", "--path", db])
    assert result.exit_code == 0, result.output
    assert (
        "offline hashing embedding (lexical, not semantic): the collection 'stdlib_docs' "
        "was built with it" in result.output
    )
    assert "argparse" in result.output


def test_search_of_a_minilm_collection_without_the_model_is_one_clear_line(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built with Chroma's default model, searched where it is neither cached nor
    fetchable: one line naming the model and the failure, no traceback, no hashing."""
    db = tmp_path / "db"
    with run_local_server() as server:
        collection = HybridCollection.get_or_create(
            chromadb.PersistentClient(path=str(db)),
            "stdlib_docs",
            sparse_embedding_function=ChromaSparseEmbeddingFunction(base_url=server.url),
            embedding_function=DefaultEmbeddingFunction(),
        )
        # Dense vectors given, so chromadb never runs (or downloads) the model here.
        vectors = np.random.default_rng(0).standard_normal((2, 384)).astype(np.float32)
        collection.add(
            ids=["a", "b"], documents=["parse arguments", "hash data"], embeddings=vectors
        )
        collection.close()
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "DOWNLOAD_PATH", tmp_path / "model-cache")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        monkeypatch.setattr(
            ONNXMiniLM_L6_V2, "MODEL_DOWNLOAD_URL", f"http://127.0.0.1:{port}/onnx.tar.gz"
        )
        result = runner.invoke(app, ["search", "parse", "--path", str(db)])
    assert result.exit_code == 1
    assert "the collection 'stdlib_docs' was built with all-MiniLM-L6-v2" in result.output
    assert "could not fetch" in result.output
    assert "CHROMA_SPARSE_EF_DENSE=hashing" not in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "model-cache" / "onnx").exists()
