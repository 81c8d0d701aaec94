"""Errors raised by chroma-sparse-ef.

The tree::

    EmbeddingError                  base: every error this package raises on purpose
    ├── ConfigurationError          bad arguments or config, raised before any request
    │   ├── MissingAPIKeyError      no key given, none in the env var, none in a CloudClient
    │   └── HybridLayoutError       not a hybrid collection, or its stored layout is unusable
    ├── InvalidInputError           bad input to a call (None, a bare string, non-str
    │   │                           items, an empty list), raised before any request
    │   └── UnsupportedSearchError  a Search that embedded Chroma cannot run locally
    ├── APIStatusError              the service answered with an error status
    │   ├── InvalidRequestError     400, and a 413 that cannot be split further
    │   ├── AuthenticationError     401
    │   ├── RateLimitError          429 after retries, or a Retry-After hint past the cap
    │   ├── UnsupportedModelError   501, and dense-only models (raised before any request)
    │   └── ServiceError            5xx after retries; also connection failures and timeouts
    ├── InvalidResponseError        a 2xx whose body breaks the contract
    ├── CorruptSparseVectorError    a sparse vector stored in Chroma metadata is damaged
    └── HybridSyncError             the collection kept changing under a search

`ServiceError` also covers failures with no status (connection refused, timeouts): its
``status_code`` is then ``None``. `UnsupportedModelError` raised before any request has
``status_code`` ``None`` too.

Every error carries ``status_code``, ``error`` (the service's own ``error`` text, if any)
and ``model``. None of them ever holds the API key: messages are built from the model
name, the status and the service's text, and the key is scrubbed from that text too.
"""

from __future__ import annotations

__all__ = [
    "APIStatusError",
    "AuthenticationError",
    "ConfigurationError",
    "CorruptSparseVectorError",
    "EmbeddingError",
    "HybridLayoutError",
    "HybridSyncError",
    "InvalidInputError",
    "InvalidRequestError",
    "InvalidResponseError",
    "MissingAPIKeyError",
    "RateLimitError",
    "ServiceError",
    "UnsupportedModelError",
    "UnsupportedSearchError",
]


class EmbeddingError(Exception):
    """Base class of every error this package raises on purpose.

    Attributes:
        message: The human-readable message.
        status_code: HTTP status of the response that caused it, if there was one.
        error: The service's ``error`` text, if the response carried one.
        model: The model the request was for, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error = error
        self.model = model

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status_code={self.status_code!r}, "
            f"model={self.model!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only attributes survive pickling (multiprocessing, pytest-xdist).
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type[EmbeddingError], message: str, state: dict[str, object]) -> EmbeddingError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class ConfigurationError(EmbeddingError, ValueError):
    """Bad arguments or configuration, found before any request is sent."""


class MissingAPIKeyError(ConfigurationError):
    """No API key: none given, none in the environment variable, none in a CloudClient."""


class InvalidInputError(EmbeddingError, ValueError):
    """Bad input to a call: not a non-empty list of strings. Raised before any request."""


class APIStatusError(EmbeddingError):
    """The service answered with an error status."""


class InvalidRequestError(APIStatusError):
    """400: the service rejected the request (bad body, unknown model, missing header).

    Also raised for a 413 on a single text, which no split can fix.
    """


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong."""


class RateLimitError(APIStatusError):
    """429 after all retries, or a Retry-After hint longer than the cap.

    Attributes:
        retry_after: The service's hint in seconds, if it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str | None = None,
        model: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, error=error, model=model)
        self.retry_after = retry_after


class UnsupportedModelError(APIStatusError):
    """The model cannot produce sparse embeddings (501, or a dense-only model in the catalog)."""


class ServiceError(APIStatusError):
    """5xx after retries, or the service could not be reached (connection error, timeout)."""


class InvalidResponseError(EmbeddingError):
    """A successful status whose body breaks the contract. Nothing partial is returned."""


class UnsupportedSearchError(InvalidInputError):
    """A ``Search`` uses something embedded Chroma cannot run locally; the message names it."""


class HybridLayoutError(ConfigurationError):
    """A collection is not a hybrid collection, or its stored layout cannot be used."""


class CorruptSparseVectorError(EmbeddingError, ValueError):
    """A stored string is not a valid encoded sparse vector.

    Attributes:
        record: Position of the bad string in a batch decode, else ``None``.
    """

    def __init__(self, message: str, *, record: int | None = None) -> None:
        super().__init__(message)
        self.record = record


class HybridSyncError(EmbeddingError):
    """The collection kept changing under a search; retry it."""
