"""The `chroma-sparse-ef serve` command's argument handling (no server is started)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from chroma_sparse_ef._version import __version__
from chroma_sparse_ef.cli import app

SECRET = "sk-planted-secret-cli-42"


@pytest.fixture
def runner() -> CliRunner:
    """A typer CLI runner."""
    return CliRunner()


def test_help_lists_the_serve_command(runner: CliRunner) -> None:
    """`chroma-sparse-ef --help` shows `serve`."""
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "serve" in result.output


def test_version_prints_the_package_version(runner: CliRunner) -> None:
    """`--version` prints the version and exits 0."""
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_serve_help_names_the_api_key_env_var(runner: CliRunner) -> None:
    """The help says the key can come from the environment (out of `ps`)."""
    result = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "240"})
    assert "CHROMA_SPARSE_EF_SERVER_API_KEY" in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--rate-limit", "fast"], "invalid rate limit"),
        (["--host", "no-such-host.invalid"], "cannot listen on"),
    ],
)
def test_bad_options_fail_with_one_line_and_no_traceback(
    runner: CliRunner, args: list[str], expected: str
) -> None:
    """Configuration errors print one `chroma-sparse-ef: error:` line and exit 1."""
    result = runner.invoke(app, ["serve", "--port", "0", *args])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("chroma-sparse-ef: error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.output


def test_the_api_key_from_the_env_var_is_never_echoed(runner: CliRunner) -> None:
    """A key from CHROMA_SPARSE_EF_SERVER_API_KEY does not appear in an error message."""
    result = runner.invoke(
        app,
        ["serve", "--port", "0", "--rate-limit", "nope"],
        env={"CHROMA_SPARSE_EF_SERVER_API_KEY": SECRET},
    )
    assert result.exit_code == 1
    assert SECRET not in result.output
