"""Shared fixtures. The autouse fixture clears every env var the package reads."""

from __future__ import annotations

import pytest

from chroma_sparse_ef import _config

_ENV_VARS = (
    "CHROMA_API_KEY",
    "CHROMA_EMBED_URL",
    "CHROMA_TENANT",
    "CHROMA_DATABASE",
    "CHROMA_SPARSE_EF_DENSE",
    "CHROMA_SPARSE_EF_SERVER_API_KEY",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's real keys and URLs out of every test; pin the offline dense leg."""
    for name in _ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    # Tests and CI never try the network: the dense leg is pinned to the offline hashing
    # embedding unless a test opts into ``auto`` (and then serves the model on loopback).
    monkeypatch.setenv("CHROMA_SPARSE_EF_DENSE", "hashing")
    # base_urls passed to a constructor are trusted for the rest of the process; each test
    # starts from none, so no test depends on which ran before it.
    _config._TRUSTED_URLS.clear()
