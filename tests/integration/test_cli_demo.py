"""`chroma-sparse-ef demo` and `search`, run for real: local server, embedded Chroma."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from chroma_sparse_ef.cli import app


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
