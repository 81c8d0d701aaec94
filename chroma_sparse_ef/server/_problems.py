"""Error answers: every error the server sends is ``{"error": "<text>"}`` as JSON.

Handlers raise `HTTPProblem`; one exception handler turns it into the response, so no
code path can produce another error shape (the spec's `ErrorResponse` is the only one).
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response

__all__ = ["HTTPProblem", "error_response"]

_JSON = "application/json"


class HTTPProblem(Exception):
    """An error answer: status, message and extra headers.

    Args:
        status_code: HTTP status to answer with.
        message: The `error` text. Never put a secret in it: it goes to the client.
        headers: Extra response headers (e.g. Retry-After on a 429).
    """

    def __init__(
        self, status_code: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"HTTPProblem({self.status_code}, {self.message!r})"

    def to_response(self) -> Response:
        """Return the JSON response for this problem."""
        return error_response(self.status_code, self.message, headers=self.headers)


def error_response(
    status_code: int, message: str, *, headers: Mapping[str, str] | None = None
) -> Response:
    """Build an ``{"error": message}`` JSON response.

    Args:
        status_code: HTTP status.
        message: The `error` text.
        headers: Extra response headers.

    Returns:
        The response, with content-type application/json.
    """
    return Response(
        orjson.dumps({"error": message}),
        status_code=status_code,
        media_type=_JSON,
        headers=dict(headers or {}),
    )
