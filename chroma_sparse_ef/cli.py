"""The `chroma-sparse-ef` command (filled in by the server and demo work)."""

from __future__ import annotations


def main() -> None:
    """Entry point of the `chroma-sparse-ef` console script."""
    raise SystemExit("chroma-sparse-ef: no commands yet")
