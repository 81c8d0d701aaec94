"""Import costs: the pytest plugin and the CLI stay light; the server's public surface is whole."""

from __future__ import annotations

import subprocess
import sys

import pytest

import chroma_sparse_ef.server as server

_HEAVY = ("fastapi", "starlette", "uvicorn")


@pytest.mark.parametrize("module", ["chroma_sparse_ef.testing", "chroma_sparse_ef.cli"])
def test_importing_the_plugin_or_cli_loads_no_web_framework(module: str) -> None:
    """The pytest11 plugin (imported on every pytest run) and the CLI import no FastAPI/uvicorn."""
    code = f"import sys, {module}; print([m for m in {_HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_server_all_is_sorted_and_every_name_resolves() -> None:
    """Every name in chroma_sparse_ef.server.__all__ is importable, and the list is sorted."""
    assert server.__all__ == sorted(server.__all__, key=lambda n: (not n.isupper(), n))
    for name in server.__all__:
        assert getattr(server, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    """The lazy loader does not turn typos into import errors."""
    with pytest.raises(AttributeError):
        _ = server.no_such_name  # type: ignore[attr-defined]
