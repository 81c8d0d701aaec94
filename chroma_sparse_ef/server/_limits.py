"""The local server's limits in one value: what `create_app`, uvicorn and `/healthz` share."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .._exceptions import ConfigurationError
from ._settings import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_KEEP_ALIVE_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_PARALLEL_PARSES,
    DEFAULT_MAX_TEXT_CHARS,
)

__all__ = ["ServerLimits"]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Every limit of the local server; the defaults' reasons are in `_settings`.

    Attributes:
        max_body_bytes: Largest request body; larger gives 413, from Content-Length
            before reading, or while reading a chunked body.
        max_text_chars: Longest text, in characters; longer gives 413.
        max_connections: Open connections at once; more are closed when accepted.
        header_timeout_s: Seconds to send a request's head before the connection closes.
        max_header_bytes: Largest request head; larger closes the connection.
        body_timeout_s: Seconds to send the body once the head is in; slower gives 408.
        keep_alive_s: Seconds an idle kept-alive connection stays open.
        max_buffered_bytes: Bytes of request bodies held at once across all requests;
            a request that would go above it gets 503 with Retry-After.
        max_parallel_parses: Bodies over 64 KiB parsed at once (in worker threads).
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    max_parallel_parses: int = DEFAULT_MAX_PARALLEL_PARSES

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigurationError(f"{field.name} must be a number, got {value!r}")
            if field.type == "int" and not isinstance(value, int):
                raise ConfigurationError(f"{field.name} must be an integer, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{field.name} must be positive, got {value!r}")
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ConfigurationError(
                f"max_buffered_bytes ({self.max_buffered_bytes}) must be at least "
                f"max_body_bytes ({self.max_body_bytes}), or no large body could ever be read"
            )

    def replace(self, **changes: Any) -> ServerLimits:
        """A copy with some limits changed (validated again).

        Args:
            **changes: Field names and their new values.

        Returns:
            The new limits.

        Raises:
            ConfigurationError: If a value is invalid.
        """
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, int | float]:
        """The limits by field name, as `/healthz` reports them."""
        return dataclasses.asdict(self)
