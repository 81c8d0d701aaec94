"""What every embedding function accepts as input: a non-empty list of strings.

Shared by the hosted-service function and the offline hashing embedding, so both refuse
the same input with the same `InvalidInputError`, before any request or computation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ._exceptions import InvalidInputError

__all__ = ["check_input"]


def check_input(input: object) -> list[str]:
    """The texts as a list, or `InvalidInputError` before any request is sent."""
    if isinstance(input, str):
        raise InvalidInputError(
            "expected a list of texts, got a single string: wrap it in a list, e.g. [text]"
        )
    if input is None or isinstance(input, (bytes, bytearray, memoryview, Mapping)):
        raise InvalidInputError(f"expected a list of texts, got {type(input).__name__}")
    if not isinstance(input, Iterable):
        raise InvalidInputError(f"expected a list of texts, got {type(input).__name__}")
    texts = list(input)
    if not texts:
        raise InvalidInputError("expected at least one text, got an empty list")
    for pos, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(
                f"input[{pos}] is {type(text).__name__}, expected str"
                + (": decode bytes first" if isinstance(text, (bytes, bytearray)) else "")
            )
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidInputError(
                    f"input[{pos}] is not valid Unicode text: a lone surrogate at character "
                    f"{exc.start} (text decoded with errors='surrogateescape'?)"
                ) from exc
    return texts
