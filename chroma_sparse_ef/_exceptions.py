"""Errors raised by chroma-sparse-ef.

The tree (openai-python's shape: connection, timeout and status errors side by side)::

    EmbeddingError                    base: every error this package raises on purpose
    ├── ConfigurationError            bad arguments or config, raised before any request
    │   ├── MissingAPIKeyError        no key given, none in the env var, none in a CloudClient;
    │   │                             or a stored-config URL the found key may not go to
    │   └── DenseOnlyModelError       a dense-only model at construction (also an
    │                                 UnsupportedModelError, so old handlers still catch it)
    ├── InvalidInputError             bad input to a call (None, a bare string, non-str
    │                                 items, an empty list), raised before any request
    ├── APIError                      a call to the service failed
    │   ├── ServiceError              the service failed or could not be reached (the
    │   │   │                         name kept from 0.x; catch it for "try again later")
    │   │   ├── APIConnectionError    no response: refused, reset, DNS, TLS
    │   │   │   └── APITimeoutError   an attempt ran past its `timeout` deadline
    │   │   └── InternalServerError   5xx (not 501) and 408 after retries (also an
    │   │                             APIStatusError)
    │   ├── APIStatusError            the service answered with an error status;
    │   │   │                         `status_code`, `request_id`
    │   │   ├── InvalidRequestError   400, 404, other 4xx, and a 413 on a single text
    │   │   ├── AuthenticationError   401, 403
    │   │   ├── RateLimitError        429 after retries, or a Retry-After hint past the cap
    │   │   ├── UnsupportedModelError 501
    │   │   └── InternalServerError   (see above)
    │   └── InvalidResponseError      a 2xx whose body breaks the contract or the size cap
    └── HybridError                   hybrid search on a collection
        ├── HybridLayoutError         not a hybrid collection, or an unusable stored layout
        │                             (also a ConfigurationError)
        ├── HybridSyncError           the collection kept changing under a search
        ├── UnsupportedSearchError    a Search embedded Chroma cannot run (also an
        │                             InvalidInputError)
        └── CorruptSparseVectorError  a sparse vector stored in metadata is damaged (also
                                      a ValueError)

Compatibility with 0.x: every name still exists and is caught where it was, except that
connection failures and timeouts (`APIConnectionError`) are no longer `APIStatusError`s,
since they have no status; they remain `ServiceError`s. A 5xx is an
`InternalServerError`, still a `ServiceError` and an `APIStatusError`.

Every error carries ``status_code``, ``error`` (the service's own ``error`` text, if any)
and ``model``; status errors also carry ``request_id`` (the response's ``x-request-id``).
None of them ever holds the API key: messages are built from the model name, the status
and the service's text, and the key is scrubbed from that text too. None is chained to an
httpx exception, whose frames hold the request headers.
"""

from __future__ import annotations

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "ConfigurationError",
    "CorruptSparseVectorError",
    "DenseOnlyModelError",
    "EmbeddingError",
    "HybridError",
    "HybridLayoutError",
    "HybridSyncError",
    "InternalServerError",
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
        request_id: The response's ``x-request-id``, if it had one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str | None = None,
        model: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error = error
        self.model = model
        self.request_id = request_id

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status_code={self.status_code!r}, "
            f"model={self.model!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only attributes survive pickling (multiprocessing, pytest-xdist). The
        # package's own classes travel by name, looked up in this module, so pickling
        # does not depend on their public `__module__`.
        cls = type(self)
        ref: str | type[EmbeddingError] = (
            cls.__name__ if globals().get(cls.__name__) is cls else cls
        )
        return (_rebuild, (ref, self.message, self.__dict__.copy()))


def _rebuild(
    ref: str | type[EmbeddingError], message: str, state: dict[str, object]
) -> EmbeddingError:
    cls: type[EmbeddingError] = globals()[ref] if isinstance(ref, str) else ref
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class ConfigurationError(EmbeddingError, ValueError):
    """Bad arguments or configuration, found before any request is sent."""


class MissingAPIKeyError(ConfigurationError):
    """No API key for this URL.

    None was given, none is in the environment variable or a CloudClient; or the function
    was rebuilt from a stored config whose URL the key found may not go to (raised by its
    first call, naming the URL and how to allow it).
    """


class InvalidInputError(EmbeddingError, ValueError):
    """Bad input to a call: not a non-empty list of strings. Raised before any request."""


class APIError(EmbeddingError):
    """A call to the service failed: no response, an error status, or a broken body."""


class ServiceError(APIError):
    """The service failed or could not be reached; worth trying again later.

    Raised as one of its subclasses: `APIConnectionError` (`APITimeoutError`) or
    `InternalServerError`.
    """


class APIConnectionError(ServiceError):
    """No response: the connection was refused or reset, DNS or TLS failed.

    ``status_code`` is ``None``; the message ends with the last failure's type and text.
    """


class APITimeoutError(APIConnectionError):
    """An attempt ran past its ``timeout`` deadline (connect included), after retries."""


class APIStatusError(APIError):
    """The service answered with an error status (``status_code``, ``request_id``)."""


class InvalidRequestError(APIStatusError):
    """400: the service rejected the request (bad body, unknown model, missing header).

    Also raised for a 413 on a single text, which no split can fix.
    """


class AuthenticationError(APIStatusError):
    """401 or 403: the API key is missing or wrong."""


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
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, status_code=status_code, error=error, model=model, request_id=request_id
        )
        self.retry_after = retry_after


class UnsupportedModelError(APIStatusError):
    """501: the service cannot produce sparse embeddings with this model.

    A dense-only model of the catalog is refused at construction with
    `DenseOnlyModelError`, a subclass, so ``except UnsupportedModelError`` catches both.
    """


class DenseOnlyModelError(ConfigurationError, UnsupportedModelError):
    """A dense-only model of the catalog, refused at construction (no request sent)."""


class InternalServerError(ServiceError, APIStatusError):
    """5xx other than 501, or 408, after all retries."""


class InvalidResponseError(APIError):
    """A successful status whose body breaks the contract, or exceeds the size cap.

    Nothing partial is returned.
    """


class HybridError(EmbeddingError):
    """Base of the errors of hybrid search on a collection."""


class UnsupportedSearchError(HybridError, InvalidInputError):
    """A ``Search`` uses something embedded Chroma cannot run locally; the message names it."""


class HybridLayoutError(HybridError, ConfigurationError):
    """A collection is not a hybrid collection, or its stored layout cannot be used."""


class CorruptSparseVectorError(HybridError, ValueError):
    """A stored string is not a valid encoded sparse vector.

    Attributes:
        record: Position of the bad string in a batch decode, else ``None``.
    """

    def __init__(self, message: str, *, record: int | None = None) -> None:
        super().__init__(message)
        self.record = record


class HybridSyncError(HybridError):
    """The collection kept changing under a search; retry it."""


# Tracebacks and reprs show the public path, `chroma_sparse_ef.RateLimitError`, as httpx
# does for its exceptions.
for _name in __all__:
    globals()[_name].__module__ = "chroma_sparse_ef"
del _name
